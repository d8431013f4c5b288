//! Checks a parsed stack file against `schemas/stack.schema.json` (our JSON Schema of the swarm subset of the
//! Compose format) with the `jsonschema` crate, and turns its findings into `Problem`s with file and line.
//!
//! Must not: decide anything the schema does not say (semantic checks live in `decode` and `validate`).

use std::sync::OnceLock;

use jsonschema::error::ValidationErrorKind;

use super::yaml::{Node, Value};
use super::Problem;

/// The schema text, compiled into the binary.
pub const SCHEMA: &str = include_str!("../../schemas/stack.schema.json");

fn validator() -> &'static jsonschema::Validator {
    static VALIDATOR: OnceLock<jsonschema::Validator> = OnceLock::new();
    VALIDATOR.get_or_init(|| {
        // The schema is part of the program; a broken schema is a build defect caught by the tests below.
        let schema: serde_json::Value =
            serde_json::from_str(SCHEMA).expect("schemas/stack.schema.json is JSON");
        jsonschema::validator_for(&schema)
            .expect("schemas/stack.schema.json is a valid JSON Schema")
    })
}

/// Turns a JSON pointer (`/services/web/ports/0`) into our key path (`services.web.ports[0]`).
pub fn pointer_to_path(pointer: &str) -> String {
    let mut out = String::new();
    for part in pointer.split('/').skip(1) {
        let part = part.replace("~1", "/").replace("~0", "~");
        if !part.is_empty() && part.chars().all(|c| c.is_ascii_digit()) && !out.is_empty() {
            out.push_str(&format!("[{part}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&part);
        }
    }
    out
}

/// Validates one file's tree; returns a problem per schema violation.
pub fn check(tree: &Node) -> Vec<Problem> {
    let instance = tree.to_json();
    let mut out = Vec::new();
    for error in validator().iter_errors(&instance) {
        let pointer = error.instance_path().as_str().to_string();
        let node = tree.at_pointer(&pointer).unwrap_or(tree);
        let path = pointer_to_path(&pointer);
        if let ValidationErrorKind::AdditionalProperties { unexpected } = error.kind() {
            // one problem per key, placed on the key itself
            for key in unexpected {
                let pos = match &node.value {
                    Value::Map(entries) => entries
                        .iter()
                        .find(|(k, _)| &k.name == key)
                        .map(|(k, _)| k.pos.clone()),
                    _ => None,
                };
                let key_path = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                out.push(Problem::new(
                    &pos.unwrap_or(node.pos.clone()),
                    &key_path,
                    format!("unknown key `{key}`"),
                ));
            }
            continue;
        }
        let message = match error.kind() {
            ValidationErrorKind::Type { .. } => format!("has the wrong type: {error}"),
            _ => error.to_string(),
        };
        out.push(Problem::new(&node.pos, &path, message));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stack::yaml::parse;

    #[test]
    fn schema_compiles_and_accepts_a_good_file() {
        let tree = parse(
            "ok.yml",
            "version: '3.8'\nservices:\n  web:\n    image: nginx\n    build: .\n    x-meta: 1\n    deploy:\n      replicas: 2\n      update_config: {parallelism: 1, delay: 10s}\nx-top: {}\n",
        )
        .unwrap();
        assert_eq!(check(&tree), vec![]);
    }

    #[test]
    fn schema_reports_type_and_unknown_keys_with_lines() {
        let tree = parse(
            "bad.yml",
            "services:\n  web:\n    image: nginx\n    deploy:\n      replicas: [1]\n      update_config:\n        paralellism: 1\n",
        )
        .unwrap();
        let problems = check(&tree);
        assert!(
            problems
                .iter()
                .any(|p| p.path == "services.web.deploy.replicas" && p.pos.line == 5),
            "{problems:?}"
        );
        assert!(
            problems.iter().any(
                |p| p.path == "services.web.deploy.update_config.paralellism" && p.pos.line == 7
            ),
            "{problems:?}"
        );
    }

    #[test]
    fn pointers() {
        assert_eq!(
            pointer_to_path("/services/web/ports/0"),
            "services.web.ports[0]"
        );
        assert_eq!(pointer_to_path(""), "");
    }
}
