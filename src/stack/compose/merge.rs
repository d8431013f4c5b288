//! How several stack files merge into one (`docker stack deploy -c a -c b`): the `Merge` trait and its impls
//! for the types of `compose`.

use std::collections::BTreeMap;

use super::*;
use crate::stack::units::GoDuration;
use crate::stack::yaml::Pos;

/// Combining a later file's value into an earlier one, the way `docker stack deploy -c a -c b` does:
/// mappings merge key by key, a later scalar wins, lists of keyed items (ports, mounts, secrets, configs) merge by
/// key, other lists are joined without duplicates, and `command`/`entrypoint`/`healthcheck.test` are replaced.
pub trait Merge {
    /// Merges `later` into `self`.
    fn merge_from(&mut self, later: Self);
}

macro_rules! replace_merge {
    ($($t:ty),*) => {$(
        impl Merge for $t {
            fn merge_from(&mut self, later: Self) {
                *self = later;
            }
        }
    )*};
}
replace_merge!(
    String,
    u64,
    i64,
    u32,
    u16,
    f64,
    bool,
    GoDuration,
    DeployMode,
    EndpointMode,
    FailureAction,
    UpdateOrder,
    RestartCondition,
    Ulimit,
    Vec<String>,
    Pos,
    ResourceValues,
    Ipam,
    Healthcheck
);

impl<T: Merge> Merge for Option<T> {
    fn merge_from(&mut self, later: Self) {
        match (self.as_mut(), later) {
            (Some(a), Some(b)) => a.merge_from(b),
            (None, Some(b)) => *self = Some(b),
            (_, None) => {}
        }
    }
}

impl<T: Merge> Merge for BTreeMap<String, T> {
    fn merge_from(&mut self, later: Self) {
        for (k, v) in later {
            match self.get_mut(&k) {
                Some(existing) => existing.merge_from(v),
                None => {
                    self.insert(k, v);
                }
            }
        }
    }
}

/// Joins lists, dropping items already present.
fn union<T: PartialEq>(base: &mut Vec<T>, later: Vec<T>) {
    for item in later {
        if !base.contains(&item) {
            base.push(item);
        }
    }
}

/// Merges lists of keyed items: a later item replaces the earlier one with the same key.
fn keyed<T, K: PartialEq>(base: &mut Vec<T>, later: Vec<T>, key: impl Fn(&T) -> K) {
    for item in later {
        match base.iter().position(|b| key(b) == key(&item)) {
            Some(i) => base[i] = item,
            None => base.push(item),
        }
    }
}

macro_rules! field_merge {
    ($t:ty { $($f:ident),* $(,)? }) => {
        impl Merge for $t {
            fn merge_from(&mut self, later: Self) {
                $( self.$f.merge_from(later.$f); )*
            }
        }
    };
}

impl Merge for Service {
    fn merge_from(&mut self, later: Self) {
        union(&mut self.cap_add, later.cap_add);
        union(&mut self.cap_drop, later.cap_drop);
        self.command.merge_from(later.command);
        keyed(&mut self.configs, later.configs, |r| r.source.clone());
        self.deploy.merge_from(later.deploy);
        union(&mut self.dns, later.dns);
        union(&mut self.dns_search, later.dns_search);
        self.entrypoint.merge_from(later.entrypoint);
        self.environment.extend(later.environment);
        union(&mut self.env_file, later.env_file);
        union(&mut self.extra_hosts, later.extra_hosts);
        self.hostname.merge_from(later.hostname);
        self.healthcheck.merge_from(later.healthcheck);
        self.image.merge_from(later.image);
        self.init.merge_from(later.init);
        self.labels.extend(later.labels);
        self.logging.merge_from(later.logging);
        for (name, net) in later.networks {
            match self.networks.get_mut(&name) {
                Some(existing) => existing.merge_from(net),
                None => {
                    self.networks.insert(name, net);
                }
            }
        }
        keyed(&mut self.ports, later.ports, |p| {
            (p.published, p.target, p.protocol, p.mode)
        });
        self.read_only.merge_from(later.read_only);
        keyed(&mut self.secrets, later.secrets, |r| r.source.clone());
        self.stdin_open.merge_from(later.stdin_open);
        self.stop_grace_period.merge_from(later.stop_grace_period);
        self.stop_signal.merge_from(later.stop_signal);
        self.sysctls.extend(later.sysctls);
        union(&mut self.tmpfs, later.tmpfs);
        self.tty.merge_from(later.tty);
        self.ulimits.merge_from(later.ulimits);
        self.user.merge_from(later.user);
        keyed(&mut self.volumes, later.volumes, |v| v.target.clone());
        self.working_dir.merge_from(later.working_dir);
    }
}

impl Merge for Deploy {
    fn merge_from(&mut self, later: Self) {
        self.mode.merge_from(later.mode);
        if later.replicas.is_some() {
            self.replicas_pos = later.replicas_pos;
        }
        self.replicas.merge_from(later.replicas);
        self.labels.extend(later.labels);
        self.update_config.merge_from(later.update_config);
        self.rollback_config.merge_from(later.rollback_config);
        self.resources.merge_from(later.resources);
        self.restart_policy.merge_from(later.restart_policy);
        self.placement.merge_from(later.placement);
        self.endpoint_mode.merge_from(later.endpoint_mode);
    }
}

impl Merge for Placement {
    fn merge_from(&mut self, later: Self) {
        union(&mut self.constraints, later.constraints);
        union(&mut self.preferences, later.preferences);
        self.max_replicas_per_node
            .merge_from(later.max_replicas_per_node);
    }
}

impl Merge for Logging {
    fn merge_from(&mut self, later: Self) {
        // a different driver means the earlier options no longer apply
        if later.driver.is_some() && later.driver != self.driver {
            self.options.clear();
        }
        self.driver.merge_from(later.driver);
        self.options.extend(later.options);
    }
}

impl Merge for ServiceNetwork {
    fn merge_from(&mut self, later: Self) {
        union(&mut self.aliases, later.aliases);
        self.ipv4_address.merge_from(later.ipv4_address);
        self.ipv6_address.merge_from(later.ipv6_address);
        self.driver_opts.extend(later.driver_opts);
    }
}

field_merge!(UpdateConfig {
    parallelism,
    delay,
    failure_action,
    monitor,
    max_failure_ratio,
    order
});
field_merge!(Resources {
    limits,
    reservations
});
field_merge!(RestartPolicy {
    condition,
    delay,
    max_attempts,
    window
});

impl Merge for Network {
    fn merge_from(&mut self, later: Self) {
        *self = later;
    }
}

impl Merge for Volume {
    fn merge_from(&mut self, later: Self) {
        *self = later;
    }
}

impl Merge for FileObject {
    fn merge_from(&mut self, later: Self) {
        *self = later;
    }
}

impl Merge for StackFile {
    fn merge_from(&mut self, later: Self) {
        self.version.merge_from(later.version);
        self.services.merge_from(later.services);
        self.networks.merge_from(later.networks);
        self.volumes.merge_from(later.volumes);
        self.secrets.merge_from(later.secrets);
        self.configs.merge_from(later.configs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(target: u16, published: Option<u16>) -> Port {
        Port {
            mode: PortMode::Ingress,
            target,
            published,
            protocol: Protocol::Tcp,
        }
    }

    #[test]
    fn later_file_overrides_and_maps_merge() {
        let mut a = Service {
            image: Some("web:1".into()),
            command: Some(vec!["a".into(), "b".into()]),
            environment: BTreeMap::from([
                ("A".into(), Some("1".into())),
                ("B".into(), Some("2".into())),
            ]),
            ports: vec![port(80, Some(8080))],
            dns: vec!["1.1.1.1".into()],
            deploy: Some(Deploy {
                replicas: Some(2),
                update_config: Some(UpdateConfig {
                    parallelism: Some(1),
                    delay: None,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let b = Service {
            image: Some("web:2".into()),
            command: Some(vec!["c".into()]),
            environment: BTreeMap::from([("B".into(), Some("3".into())), ("C".into(), None)]),
            ports: vec![port(80, Some(8080)), port(443, Some(8443))],
            dns: vec!["1.1.1.1".into(), "8.8.8.8".into()],
            deploy: Some(Deploy {
                update_config: Some(UpdateConfig {
                    delay: Some(GoDuration(std::time::Duration::from_secs(5))),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        a.merge_from(b);
        assert_eq!(a.image.as_deref(), Some("web:2"));
        assert_eq!(a.command, Some(vec!["c".to_string()]));
        assert_eq!(a.environment.len(), 3);
        assert_eq!(a.environment["B"], Some("3".into()));
        assert_eq!(a.ports.len(), 2);
        assert_eq!(a.dns, vec!["1.1.1.1".to_string(), "8.8.8.8".to_string()]);
        let deploy = a.deploy.unwrap();
        assert_eq!(deploy.replicas, Some(2));
        let uc = deploy.update_config.unwrap();
        assert_eq!(uc.parallelism, Some(1));
        assert_eq!(
            uc.delay,
            Some(GoDuration(std::time::Duration::from_secs(5)))
        );
    }
}
