//! Docker service templates (`{{.Task.Slot}}`, `{{ .Node.Hostname }}`…) expanded in env values,
//! the hostname and container labels, from the task's [`TemplateContext`].
//!
//! Only plain field references are supported; anything else (unknown fields, functions, pipes,
//! `{{.Service.Labels}}`) is left exactly as written, so a typo is visible in the task rather than
//! silently erased. Must not: do I/O or know how the agent gets its assignments.

use std::collections::BTreeMap;

/// The values a template may refer to, for one task.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TemplateContext {
    /// `{{.Service.ID}}`.
    pub service_id: String,
    /// `{{.Service.Name}}`.
    pub service_name: String,
    /// `{{.Task.ID}}`.
    pub task_id: String,
    /// `{{.Task.Name}}`: docker's `service.slot.taskid`.
    pub task_name: String,
    /// `{{.Task.Slot}}`: the slot number, or the node id for global services (like swarmkit).
    pub task_slot: String,
    /// `{{.Node.ID}}`.
    pub node_id: String,
    /// `{{.Node.Hostname}}`.
    pub node_hostname: String,
}

impl TemplateContext {
    fn lookup(&self, field: &str) -> Option<&str> {
        Some(match field {
            ".Service.ID" => &self.service_id,
            ".Service.Name" => &self.service_name,
            ".Task.ID" => &self.task_id,
            ".Task.Name" => &self.task_name,
            ".Task.Slot" => &self.task_slot,
            ".Node.ID" => &self.node_id,
            ".Node.Hostname" => &self.node_hostname,
            _ => return None,
        })
    }
}

/// Expands every known `{{ .Field }}` in `input`; unknown or malformed placeholders stay as
/// written.
pub fn expand(input: &str, ctx: &TemplateContext) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after_open = &rest[open + 2..];
        let Some(close) = after_open.find("}}") else {
            out.push_str(&rest[open..]);
            return out;
        };
        let inner = after_open[..close].trim();
        match ctx.lookup(inner) {
            Some(value) => out.push_str(value),
            None => out.push_str(&rest[open..open + 2 + close + 2]),
        }
        rest = &after_open[close + 2..];
    }
    out.push_str(rest);
    out
}

/// Expands the values of container labels (keys are kept as written).
pub fn expand_labels(
    labels: &BTreeMap<String, String>,
    ctx: &TemplateContext,
) -> BTreeMap<String, String> {
    labels
        .iter()
        .map(|(k, v)| (k.clone(), expand(v, ctx)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> TemplateContext {
        TemplateContext {
            service_id: "svc123".into(),
            service_name: "web".into(),
            task_id: "tsk456".into(),
            task_name: "web.2.tsk456".into(),
            task_slot: "2".into(),
            node_id: "node789".into(),
            node_hostname: "box1".into(),
        }
    }

    #[test]
    fn known_fields_expand() {
        let c = ctx();
        for (input, want) in [
            ("{{.Service.Name}}", "web"),
            ("{{.Service.ID}}", "svc123"),
            ("{{.Task.Slot}}", "2"),
            ("{{.Task.ID}}", "tsk456"),
            ("{{.Task.Name}}", "web.2.tsk456"),
            ("{{.Node.ID}}", "node789"),
            ("{{.Node.Hostname}}", "box1"),
            ("{{ .Task.Slot }}", "2"),
            ("{{  .Node.Hostname\t}}", "box1"),
            (
                "{{.Service.Name}}-{{.Task.Slot}}.{{.Node.Hostname}}",
                "web-2.box1",
            ),
            ("plain", "plain"),
            ("", ""),
        ] {
            assert_eq!(expand(input, &c), want, "{input:?}");
        }
    }

    #[test]
    fn unknown_and_malformed_are_left_as_written() {
        let c = ctx();
        for input in [
            "{{.Service.Labels}}",
            "{{.Task.Nope}}",
            "{{index .Service.Labels \"a\"}}",
            "{{.Task.Slot",
            "{{",
            "}}",
            "a {{ b",
        ] {
            assert_eq!(expand(input, &c), input, "{input:?}");
        }
        assert_eq!(
            expand("x{{.Nope}}y{{.Task.Slot}}z", &c),
            "x{{.Nope}}y2z",
            "known after unknown"
        );
    }

    #[test]
    fn label_values_expand() {
        let c = ctx();
        let labels = BTreeMap::from([
            ("slot".to_string(), "{{.Task.Slot}}".to_string()),
            ("{{.Task.Slot}}".to_string(), "k".to_string()),
        ]);
        let out = expand_labels(&labels, &c);
        assert_eq!(out["slot"], "2");
        assert_eq!(out["{{.Task.Slot}}"], "k", "keys are not expanded");
    }
}
