//! `deploy:`: mode, replicas, placement, update/rollback config, restart policy, resources.

use super::{idx, sub, Decoder};
use crate::stack::compose::*;
use crate::stack::units::parse_nano_cpus;
use crate::stack::yaml::{Node, Value};

impl Decoder<'_> {
    pub(super) fn deploy(&mut self, node: &Node, path: &str) -> Option<Deploy> {
        let known = [
            "mode",
            "replicas",
            "labels",
            "update_config",
            "rollback_config",
            "resources",
            "restart_policy",
            "placement",
            "endpoint_mode",
        ];
        let f = self.fields(node, path, &known, &[])?;
        let mut d = Deploy::default();
        if let Some(n) = f.get("mode") {
            d.mode = self.enumerated(
                n,
                &sub(path, "mode"),
                &[
                    ("replicated", DeployMode::Replicated),
                    ("global", DeployMode::Global),
                    ("replicated-job", DeployMode::ReplicatedJob),
                    ("global-job", DeployMode::GlobalJob),
                ],
            );
        }
        if let Some(n) = f.get("replicas") {
            d.replicas = self.uint(n, &sub(path, "replicas"));
            d.replicas_pos = n.pos.clone();
        }
        if let Some(n) = f.get("labels") {
            d.labels = self.labels(n, &sub(path, "labels"));
        }
        if let Some(n) = f.get("update_config") {
            d.update_config = self.update_config(n, &sub(path, "update_config"));
        }
        if let Some(n) = f.get("rollback_config") {
            d.rollback_config = self.update_config(n, &sub(path, "rollback_config"));
        }
        if let Some(n) = f.get("resources") {
            d.resources = self.resources(n, &sub(path, "resources"));
        }
        if let Some(n) = f.get("restart_policy") {
            let rp = sub(path, "restart_policy");
            if let Some(rf) = self.fields(
                n,
                &rp,
                &["condition", "delay", "max_attempts", "window"],
                &[],
            ) {
                let mut r = RestartPolicy::default();
                if let Some(c) = rf.get("condition") {
                    r.condition = self.enumerated(
                        c,
                        &sub(&rp, "condition"),
                        &[
                            ("none", RestartCondition::None),
                            ("on-failure", RestartCondition::OnFailure),
                            ("any", RestartCondition::Any),
                        ],
                    );
                }
                if let Some(c) = rf.get("delay") {
                    r.delay = self.duration(c, &sub(&rp, "delay"));
                }
                if let Some(c) = rf.get("max_attempts") {
                    r.max_attempts = self.uint(c, &sub(&rp, "max_attempts"));
                }
                if let Some(c) = rf.get("window") {
                    r.window = self.duration(c, &sub(&rp, "window"));
                }
                d.restart_policy = Some(r);
            }
        }
        if let Some(n) = f.get("placement") {
            let pp = sub(path, "placement");
            if let Some(pf) = self.fields(
                n,
                &pp,
                &["constraints", "preferences", "max_replicas_per_node"],
                &[],
            ) {
                let mut p = Placement::default();
                if let Some(c) = pf.get("constraints") {
                    p.constraints = self.string_list(c, &sub(&pp, "constraints"));
                }
                if let Some(c) = pf.get("preferences") {
                    let prefp = sub(&pp, "preferences");
                    if let Some(items) = self.list(c, &prefp) {
                        for (i, item) in items.iter().enumerate() {
                            let ip = idx(&prefp, i);
                            if let Some(fi) = self.fields(item, &ip, &["spread"], &[]) {
                                match fi
                                    .get("spread")
                                    .and_then(|s| self.string(s, &sub(&ip, "spread")))
                                {
                                    Some(spread) => {
                                        p.preferences.push(PlacementPreference { spread })
                                    }
                                    None => self.err(&item.pos, &ip, "a preference needs `spread`"),
                                }
                            }
                        }
                    }
                }
                if let Some(c) = pf.get("max_replicas_per_node") {
                    p.max_replicas_per_node = self.uint(c, &sub(&pp, "max_replicas_per_node"));
                }
                d.placement = Some(p);
            }
        }
        if let Some(n) = f.get("endpoint_mode") {
            d.endpoint_mode = self.enumerated(
                n,
                &sub(path, "endpoint_mode"),
                &[("vip", EndpointMode::Vip), ("dnsrr", EndpointMode::Dnsrr)],
            );
        }
        Some(d)
    }

    pub(super) fn update_config(&mut self, node: &Node, path: &str) -> Option<UpdateConfig> {
        let known = [
            "parallelism",
            "delay",
            "failure_action",
            "monitor",
            "max_failure_ratio",
            "order",
        ];
        let f = self.fields(node, path, &known, &[])?;
        let mut u = UpdateConfig::default();
        if let Some(n) = f.get("parallelism") {
            u.parallelism = self.uint(n, &sub(path, "parallelism"));
        }
        if let Some(n) = f.get("delay") {
            u.delay = self.duration(n, &sub(path, "delay"));
        }
        if let Some(n) = f.get("failure_action") {
            u.failure_action = self.enumerated(
                n,
                &sub(path, "failure_action"),
                &[
                    ("pause", FailureAction::Pause),
                    ("continue", FailureAction::Continue),
                    ("rollback", FailureAction::Rollback),
                ],
            );
        }
        if let Some(n) = f.get("monitor") {
            u.monitor = self.duration(n, &sub(path, "monitor"));
        }
        if let Some(n) = f.get("max_failure_ratio") {
            let r = self.float(n, &sub(path, "max_failure_ratio"));
            if r.is_some_and(|r| !(0.0..=1.0).contains(&r)) {
                self.err(
                    &n.pos,
                    &sub(path, "max_failure_ratio"),
                    "must be between 0 and 1",
                );
            }
            u.max_failure_ratio = r;
        }
        if let Some(n) = f.get("order") {
            u.order = self.enumerated(
                n,
                &sub(path, "order"),
                &[
                    ("stop-first", UpdateOrder::StopFirst),
                    ("start-first", UpdateOrder::StartFirst),
                ],
            );
        }
        Some(u)
    }

    pub(super) fn resources(&mut self, node: &Node, path: &str) -> Option<Resources> {
        let f = self.fields(node, path, &["limits", "reservations"], &[])?;
        let mut r = Resources::default();
        if let Some(n) = f.get("limits") {
            r.limits = self.resource_values(n, &sub(path, "limits"), false);
        }
        if let Some(n) = f.get("reservations") {
            r.reservations = self.resource_values(n, &sub(path, "reservations"), true);
        }
        Some(r)
    }

    pub(super) fn resource_values(
        &mut self,
        node: &Node,
        path: &str,
        reservation: bool,
    ) -> Option<ResourceValues> {
        let known: &[&str] = if reservation {
            &["cpus", "memory", "generic_resources", "pids"]
        } else {
            &["cpus", "memory", "pids"]
        };
        let f = self.fields(node, path, known, &["devices"])?;
        let mut v = ResourceValues::default();
        if let Some(n) = f.get("cpus") {
            let cp = sub(path, "cpus");
            let text = match &n.value {
                Value::Str(s) => Some(s.clone()),
                Value::Int(i) => Some(i.to_string()),
                Value::Float(x) => Some(x.to_string()),
                _ => {
                    self.expected(n, &cp, "a number of CPUs like \"0.5\"");
                    None
                }
            };
            if let Some(text) = text {
                match parse_nano_cpus(&text) {
                    Ok(nanos) => {
                        v.nano_cpus = Some(nanos);
                        v.cpus = Some(text);
                    }
                    Err(e) => self.err(&n.pos, &cp, e),
                }
            }
        }
        if let Some(n) = f.get("memory") {
            v.memory = self.bytes(n, &sub(path, "memory"));
        }
        if let Some(n) = f.get("pids") {
            v.pids = self.int(n, &sub(path, "pids"));
        }
        if let Some(n) = f.get("generic_resources") {
            let gp = sub(path, "generic_resources");
            if let Some(items) = self.list(n, &gp) {
                for (i, item) in items.iter().enumerate() {
                    let ip = idx(&gp, i);
                    let Some(gf) = self.fields(
                        item,
                        &ip,
                        &["discrete_resource_spec", "named_resource_spec"],
                        &[],
                    ) else {
                        continue;
                    };
                    let mut g = GenericResource {
                        discrete_resource_spec: None,
                        named_resource_spec: None,
                    };
                    if let Some(d) = gf.get("discrete_resource_spec") {
                        let dp = sub(&ip, "discrete_resource_spec");
                        if let Some(df) = self.fields(d, &dp, &["kind", "value"], &[]) {
                            let kind = df
                                .get("kind")
                                .and_then(|k| self.string(k, &sub(&dp, "kind")));
                            let value = df
                                .get("value")
                                .and_then(|k| self.int(k, &sub(&dp, "value")));
                            if let (Some(kind), Some(value)) = (kind, value) {
                                g.discrete_resource_spec =
                                    Some(GenericResourceSpec { kind, value });
                            }
                        }
                    }
                    if let Some(d) = gf.get("named_resource_spec") {
                        let dp = sub(&ip, "named_resource_spec");
                        if let Some(df) = self.fields(d, &dp, &["kind", "value"], &[]) {
                            let kind = df
                                .get("kind")
                                .and_then(|k| self.string(k, &sub(&dp, "kind")));
                            let value = df
                                .get("value")
                                .and_then(|k| self.string(k, &sub(&dp, "value")));
                            if let (Some(kind), Some(value)) = (kind, value) {
                                g.named_resource_spec = Some(GenericResourceSpec { kind, value });
                            }
                        }
                    }
                    v.generic_resources.push(g);
                }
            }
        }
        Some(v)
    }
}
