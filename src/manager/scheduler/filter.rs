//! Node filters: whether a node may take a new task (ready and active, enough resources, placement
//! constraints, max replicas per node) or keep an existing one, and docker's "no suitable node (...)"
//! explanation of why none fits.
//!
//! Must not: choose among eligible nodes (that is the scheduler's spread) or write anything.

use std::collections::BTreeMap;

use crate::model::{
    constraint::NodeFacts, Constraint, Node, NodeAvailability, NodeRole, NodeState, Placement,
    TaskSpec,
};

/// Why a node cannot take a new task, in the order the filters run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Unfit {
    /// Not Ready, or not Active (paused or drained).
    NotAvailable,
    /// The task's reservations do not fit next to what the node already runs.
    Resources,
    /// A placement constraint does not match.
    Constraints,
    /// The service already has `max_replicas_per_node` tasks there.
    MaxReplicas,
}

impl Unfit {
    /// Docker's explanation for `n` nodes.
    pub fn explain(self, n: usize) -> String {
        let nodes = if n == 1 {
            "1 node".to_string()
        } else {
            format!("{n} nodes")
        };
        match self {
            Unfit::NotAvailable => format!("{nodes} not available for new tasks"),
            Unfit::Resources => format!("insufficient resources on {nodes}"),
            Unfit::Constraints if n == 1 => "1 node has unmatched placement constraints".into(),
            Unfit::Constraints => format!("{nodes} have unmatched placement constraints"),
            Unfit::MaxReplicas => format!("max replicas per node limit exceeded on {nodes}"),
        }
    }
}

/// `no suitable node (...)` from how many nodes each filter refused.
pub fn explain(refused: &BTreeMap<Unfit, usize>) -> String {
    if refused.is_empty() {
        return "no suitable node".into();
    }
    let parts: Vec<String> = refused.iter().map(|(u, n)| u.explain(*n)).collect();
    format!("no suitable node ({})", parts.join("; "))
}

/// What a node already carries (kept by the store's index of node loads).
pub use crate::store::NodeLoad;

/// What the filters and the spread read of a node's load.
pub trait Load {
    /// Non-terminal tasks on the node.
    fn tasks(&self) -> u64;
    /// Non-terminal tasks of `service_id` on the node.
    fn of_service(&self, service_id: &str) -> u64;
    /// Reserved CPU (billionths).
    fn nano_cpus(&self) -> u64;
    /// Reserved memory (bytes).
    fn memory_bytes(&self) -> u64;
}

impl Load for NodeLoad {
    fn tasks(&self) -> u64 {
        self.tasks
    }
    fn of_service(&self, service_id: &str) -> u64 {
        NodeLoad::of_service(self, service_id)
    }
    fn nano_cpus(&self) -> u64 {
        self.nano_cpus
    }
    fn memory_bytes(&self) -> u64 {
        self.memory_bytes
    }
}

/// The attributes of `node` that constraints read.
pub fn facts(node: &Node) -> NodeFacts<'_> {
    NodeFacts {
        id: &node.id,
        hostname: &node.description.hostname,
        role: match node.spec.role {
            NodeRole::Manager => "manager",
            NodeRole::Worker => "worker",
        },
        labels: &node.spec.labels,
        engine_labels: &node.description.engine_labels,
        os: &node.description.platform.os,
        arch: &node.description.platform.arch,
    }
}

/// Whether `node` satisfies every constraint of `placement` (an unparsable constraint matches no node).
pub fn constraints_match(node: &Node, placement: &Placement) -> bool {
    let facts = facts(node);
    placement
        .constraints
        .iter()
        .all(|c| Constraint::parse(c).is_ok_and(|c| c.matches(&facts)))
}

/// Whether `node` may be given new tasks at all: Ready and Active.
pub fn available(node: &Node) -> bool {
    node.status.state == NodeState::Ready && node.spec.availability == NodeAvailability::Active
}

/// Whether the tasks already on `node` may stay there: it is not Down and not drained.
pub fn may_keep(node: Option<&Node>) -> bool {
    node.is_some_and(|n| {
        n.status.state != NodeState::Down && n.spec.availability != NodeAvailability::Drain
    })
}

/// Whether a global service with `placement` should have a task on `node` (Ready, Active, constraints).
pub fn global_eligible(node: &Node, placement: &Placement) -> bool {
    available(node) && constraints_match(node, placement)
}

/// Whether a global task may stay on `node`: [`may_keep`] and the constraints still match.
pub fn global_may_keep(node: Option<&Node>, placement: &Placement) -> bool {
    may_keep(node) && node.is_some_and(|n| constraints_match(n, placement))
}

/// Fits `amount` next to `used` within `capacity` (0 = unknown = unlimited)?
fn fits(capacity: u64, used: u64, amount: u64) -> bool {
    capacity == 0 || amount == 0 || used.saturating_add(amount) <= capacity
}

/// Whether `node`, already carrying `load`, may take a new task of `service_id` made from `spec`; the
/// first filter that refuses says why. `max_replicas` is skipped for global tasks (one per node anyway).
pub fn check(
    node: &Node,
    load: &impl Load,
    service_id: &str,
    spec: &TaskSpec,
    check_max_replicas: bool,
) -> Result<(), Unfit> {
    if !available(node) {
        return Err(Unfit::NotAvailable);
    }
    let r = &spec.resources.reservations;
    let cap = &node.description.resources;
    if !fits(cap.nano_cpus, load.nano_cpus(), r.nano_cpus.max(0) as u64)
        || !fits(cap.memory_bytes, load.memory_bytes(), r.memory_bytes)
    {
        return Err(Unfit::Resources);
    }
    if !constraints_match(node, &spec.placement) {
        return Err(Unfit::Constraints);
    }
    let max = spec.placement.max_replicas_per_node;
    if check_max_replicas && max > 0 && load.of_service(service_id) >= max {
        return Err(Unfit::MaxReplicas);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manager::testutil::*;
    use crate::model::NodeState;

    #[test]
    fn filters_in_order() {
        let mut spec = TaskSpec::default();
        spec.placement.constraints = vec!["node.labels.zone==a".into()];
        spec.placement.max_replicas_per_node = 1;
        spec.resources.reservations.memory_bytes = 100;
        let mut small = labelled("n1", &[("zone", "a")]);
        small.description.resources.memory_bytes = 150;
        let one = |svc: &str| {
            let mut l = NodeLoad::default();
            l.add(svc, &TaskSpec::default());
            l
        };
        let cases: Vec<(&str, Node, NodeLoad, Result<(), Unfit>)> = vec![
            ("fits", small.clone(), NodeLoad::default(), Ok(())),
            (
                "paused",
                {
                    let mut n = small.clone();
                    n.spec.availability = NodeAvailability::Pause;
                    n
                },
                NodeLoad::default(),
                Err(Unfit::NotAvailable),
            ),
            (
                "down",
                {
                    let mut n = small.clone();
                    n.status.state = NodeState::Down;
                    n
                },
                NodeLoad::default(),
                Err(Unfit::NotAvailable),
            ),
            (
                "memory",
                small.clone(),
                NodeLoad {
                    memory_bytes: 60,
                    ..NodeLoad::default()
                },
                Err(Unfit::Resources),
            ),
            (
                "unknown capacity",
                labelled("n1", &[("zone", "a")]),
                NodeLoad {
                    memory_bytes: 1 << 40,
                    ..NodeLoad::default()
                },
                Ok(()),
            ),
            (
                "constraint",
                labelled("n1", &[("zone", "b")]),
                NodeLoad::default(),
                Err(Unfit::Constraints),
            ),
            (
                "max replicas",
                small.clone(),
                one("s1"),
                Err(Unfit::MaxReplicas),
            ),
            ("other service", small.clone(), one("s2"), Ok(())),
        ];
        for (name, node, load, want) in cases {
            assert_eq!(check(&node, &load, "s1", &spec, true), want, "{name}");
        }
    }

    #[test]
    fn explains_like_docker() {
        let refused = BTreeMap::from([(Unfit::NotAvailable, 1), (Unfit::Constraints, 1)]);
        assert_eq!(
            explain(&refused),
            "no suitable node (1 node not available for new tasks; 1 node has unmatched placement constraints)"
        );
        assert_eq!(explain(&BTreeMap::new()), "no suitable node");
        assert_eq!(
            Unfit::Resources.explain(2),
            "insufficient resources on 2 nodes"
        );
    }
}
