//! What a stack deploy will do, as data the CLI prints: one `PlanItem` per object, with the changed fields.
//!
//! Must not: compute anything (that is `manager::deploy`); plain data with serde so it travels over the API.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What a deploy does to one object. On the wire (JSON) as the variant name: `"Create"`, `"Left"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PlanAction {
    /// The object is created.
    Create,
    /// The object is changed (or, for secrets and configs, gets a new version).
    Update,
    /// The object is removed (`--prune`).
    Remove,
    /// Nothing changes.
    Unchanged,
    /// The files no longer name it, but it is kept (no `--prune`).
    Left,
}

impl PlanAction {
    /// Every action.
    pub const ALL: [PlanAction; 5] = [
        PlanAction::Create,
        PlanAction::Update,
        PlanAction::Remove,
        PlanAction::Unchanged,
        PlanAction::Left,
    ];

    /// The lower-case verb people read (`create`, `left`, ...).
    pub fn name(self) -> &'static str {
        match self {
            PlanAction::Create => "create",
            PlanAction::Update => "update",
            PlanAction::Remove => "remove",
            PlanAction::Unchanged => "unchanged",
            PlanAction::Left => "left",
        }
    }
}

impl fmt::Display for PlanAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for PlanAction {
    type Err = String;

    /// The inverse of `name`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PlanAction::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| format!("unknown plan action {s:?}"))
    }
}

/// The kind of object a plan item is about. On the wire (JSON) as its lower-case name: `"service"`.
///
/// The variants are in alphabetical order of their names, so ordering kinds orders their names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PlanKind {
    /// A config.
    Config,
    /// A network.
    Network,
    /// A secret.
    Secret,
    /// A service.
    Service,
}

impl PlanKind {
    /// Every kind.
    pub const ALL: [PlanKind; 4] = [
        PlanKind::Config,
        PlanKind::Network,
        PlanKind::Secret,
        PlanKind::Service,
    ];

    /// The lower-case name (`service`, `secret`, `config`, `network`), as on the wire.
    pub fn name(self) -> &'static str {
        match self {
            PlanKind::Config => "config",
            PlanKind::Network => "network",
            PlanKind::Secret => "secret",
            PlanKind::Service => "service",
        }
    }
}

impl fmt::Display for PlanKind {
    /// The name; padding (`{:<8}`) applies.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

impl FromStr for PlanKind {
    type Err = String;

    /// The inverse of `name`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PlanKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| format!("unknown object kind {s:?}"))
    }
}

/// One object of a plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanItem {
    /// Service, secret, config or network.
    pub kind: PlanKind,
    /// Its cluster name.
    pub name: String,
    /// What happens to it.
    pub action: PlanAction,
    /// For updates: one entry per changed field, `old → new` (`image: web:1 → web:2`, `env: +FOO=1 -BAR`).
    pub fields: Vec<String>,
}

impl PlanItem {
    /// Whether applying the plan changes this object.
    pub fn is_change(&self) -> bool {
        matches!(
            self.action,
            PlanAction::Create | PlanAction::Update | PlanAction::Remove
        )
    }

    /// One line for people: `update service demo_web (image: web:1 → web:2)`.
    pub fn line(&self) -> String {
        let verb = match self.action {
            PlanAction::Left => "left (not pruned)",
            action => action.name(),
        };
        if self.fields.is_empty() {
            format!("{verb} {} {}", self.kind, self.name)
        } else {
            format!(
                "{verb} {} {} ({})",
                self.kind,
                self.name,
                self.fields.join("; ")
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for a in PlanAction::ALL {
            assert_eq!(a.name().parse::<PlanAction>(), Ok(a));
        }
        for k in PlanKind::ALL {
            assert_eq!(k.name().parse::<PlanKind>(), Ok(k));
        }
        assert!("deleted".parse::<PlanAction>().is_err());
        assert!("volume".parse::<PlanKind>().is_err());
    }

    #[test]
    fn kinds_order_like_their_names() {
        let mut names: Vec<&str> = PlanKind::ALL.iter().map(|k| k.name()).collect();
        names.sort();
        let by_kind: Vec<&str> = PlanKind::ALL.iter().map(|k| k.name()).collect();
        assert_eq!(names, by_kind);
    }

    #[test]
    fn wire_format_is_unchanged() {
        let item = PlanItem {
            kind: PlanKind::Service,
            name: "demo_web".into(),
            action: PlanAction::Left,
            fields: vec!["image: a → b".into()],
        };
        let json = serde_json::to_string(&item).unwrap();
        assert_eq!(
            json,
            r#"{"kind":"service","name":"demo_web","action":"Left","fields":["image: a → b"]}"#
        );
        assert_eq!(serde_json::from_str::<PlanItem>(&json).unwrap(), item);
        for (k, s) in [
            (PlanKind::Config, "\"config\""),
            (PlanKind::Network, "\"network\""),
            (PlanKind::Secret, "\"secret\""),
        ] {
            assert_eq!(serde_json::to_string(&k).unwrap(), s);
        }
        assert_eq!(
            serde_json::to_string(&PlanAction::Unchanged).unwrap(),
            "\"Unchanged\""
        );
    }
}
