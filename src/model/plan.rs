//! What a stack deploy will do, as data the CLI prints: one `PlanItem` per object, with the changed fields.
//!
//! Must not: compute anything (that is `manager::deploy`); plain data with serde so it travels over the API.

use serde::{Deserialize, Serialize};

/// What a deploy does to one object.
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

/// One object of a plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanItem {
    /// `service`, `secret`, `config` or `network`.
    pub kind: String,
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
            PlanAction::Create => "create",
            PlanAction::Update => "update",
            PlanAction::Remove => "remove",
            PlanAction::Unchanged => "unchanged",
            PlanAction::Left => "left (not pruned)",
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
