//! Placement constraints (`node.role == manager`, `node.labels.zone != a`): parsing and matching a node.
//!
//! Must not: know about the scheduler; it only answers "does this node satisfy this constraint".

use serde::{Deserialize, Serialize};

/// A comparison in a constraint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConstraintOp {
    /// `==`
    Eq,
    /// `!=`
    Ne,
}

/// One parsed placement constraint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Constraint {
    /// The attribute, e.g. `node.hostname`, `node.labels.zone`, `engine.labels.x`.
    pub key: String,
    /// The comparison.
    pub op: ConstraintOp,
    /// The value compared with (case-insensitive for everything but labels, as in swarm).
    pub value: String,
}

/// The node attributes a constraint can read.
pub struct NodeFacts<'a> {
    /// Node id.
    pub id: &'a str,
    /// Hostname.
    pub hostname: &'a str,
    /// "manager" or "worker".
    pub role: &'a str,
    /// Node labels set by the operator.
    pub labels: &'a std::collections::BTreeMap<String, String>,
    /// Engine labels reported by the node.
    pub engine_labels: &'a std::collections::BTreeMap<String, String>,
    /// Operating system, e.g. "linux".
    pub os: &'a str,
    /// Architecture, e.g. "x86_64".
    pub arch: &'a str,
}

const KNOWN: &[&str] = &[
    "node.id",
    "node.hostname",
    "node.role",
    "node.platform.os",
    "node.platform.arch",
];

impl Constraint {
    /// Parses `KEY==VALUE` or `KEY!=VALUE`.
    pub fn parse(text: &str) -> Result<Constraint, String> {
        let (key, op, value) = if let Some((k, v)) = text.split_once("==") {
            (k, ConstraintOp::Eq, v)
        } else if let Some((k, v)) = text.split_once("!=") {
            (k, ConstraintOp::Ne, v)
        } else {
            return Err(format!(
                "invalid constraint {text:?}: expected KEY==VALUE or KEY!=VALUE"
            ));
        };
        let key = key.trim();
        let value = value.trim();
        if key.is_empty() || value.is_empty() {
            return Err(format!("invalid constraint {text:?}: empty key or value"));
        }
        let known = KNOWN.contains(&key.to_ascii_lowercase().as_str())
            || key.starts_with("node.labels.")
            || key.starts_with("engine.labels.");
        if !known {
            return Err(format!(
                "invalid constraint {text:?}: unknown attribute {key:?} (use node.id, node.hostname, node.role, \
                 node.platform.os, node.platform.arch, node.labels.NAME or engine.labels.NAME)"
            ));
        }
        Ok(Constraint {
            key: key.to_string(),
            op,
            value: value.to_string(),
        })
    }

    /// Whether `node` satisfies this constraint. A label the node lacks never equals a value.
    pub fn matches(&self, node: &NodeFacts) -> bool {
        let lower = self.key.to_ascii_lowercase();
        let (actual, case_insensitive): (Option<&str>, bool) = match lower.as_str() {
            "node.id" => (Some(node.id), false),
            "node.hostname" => (Some(node.hostname), true),
            "node.role" => (Some(node.role), true),
            "node.platform.os" => (Some(node.os), true),
            "node.platform.arch" => (Some(node.arch), true),
            _ => {
                if let Some(label) = self.key.strip_prefix("node.labels.") {
                    (node.labels.get(label).map(String::as_str), false)
                } else if let Some(label) = self.key.strip_prefix("engine.labels.") {
                    (node.engine_labels.get(label).map(String::as_str), false)
                } else {
                    (None, false)
                }
            }
        };
        let equal = match actual {
            Some(a) if case_insensitive => a.eq_ignore_ascii_case(&self.value),
            Some(a) => a == self.value,
            None => false,
        };
        match self.op {
            ConstraintOp::Eq => equal,
            ConstraintOp::Ne => !equal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn parse_and_match() {
        let labels = BTreeMap::from([("zone".to_string(), "a".to_string())]);
        let empty = BTreeMap::new();
        let node = NodeFacts {
            id: "n1",
            hostname: "Host1",
            role: "manager",
            labels: &labels,
            engine_labels: &empty,
            os: "linux",
            arch: "x86_64",
        };
        let cases = [
            ("node.role == manager", true),
            ("node.role==worker", false),
            ("node.role != worker", true),
            ("node.hostname == host1", true),
            ("node.labels.zone == a", true),
            ("node.labels.zone == A", false),
            ("node.labels.missing != x", true),
            ("node.labels.missing == x", false),
            ("node.id == n1", true),
        ];
        for (text, want) in cases {
            assert_eq!(
                Constraint::parse(text).unwrap().matches(&node),
                want,
                "{text}"
            );
        }
        for bad in ["node.role", "node.role ==", "foo == bar", "node=foo"] {
            assert!(Constraint::parse(bad).is_err(), "{bad}");
        }
    }
}
