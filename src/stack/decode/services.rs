//! One service: its keys, healthcheck, networks, secrets/configs references and ulimits.

use std::collections::BTreeMap;

use super::{idx, sub, Decoder, IGNORED_SERVICE_KEYS, SERVICE_KEYS};
use crate::stack::compose::*;
use crate::stack::yaml::{Node, Pos, Value};

impl Decoder<'_> {
    pub(super) fn service(&mut self, node: &Node, path: &str, key_pos: &Pos) -> Service {
        let mut s = Service {
            pos: key_pos.clone(),
            ..Default::default()
        };
        let Some(f) = self.fields(node, path, SERVICE_KEYS, IGNORED_SERVICE_KEYS) else {
            return s;
        };
        let p = |k: &str| sub(path, k);
        if let Some(n) = f.get("image") {
            s.image = self.string(n, &p("image"));
        }
        if let Some(n) = f.get("command") {
            s.command = self.command(n, &p("command"));
        }
        if let Some(n) = f.get("entrypoint") {
            s.entrypoint = self.command(n, &p("entrypoint"));
        }
        if let Some(n) = f.get("cap_add") {
            s.cap_add = self.string_list(n, &p("cap_add"));
        }
        if let Some(n) = f.get("cap_drop") {
            s.cap_drop = self.string_list(n, &p("cap_drop"));
        }
        if let Some(n) = f.get("dns") {
            s.dns = self.string_or_list(n, &p("dns"));
        }
        if let Some(n) = f.get("dns_search") {
            s.dns_search = self.string_or_list(n, &p("dns_search"));
        }
        if let Some(n) = f.get("env_file") {
            // printed as written (like docker), read relative to the stack file's folder
            s.env_file = self.string_or_list(n, &p("env_file"));
            self.env_files(n, &p("env_file"), &s.env_file, &mut s.environment);
        }
        if let Some(n) = f.get("environment") {
            for (k, v) in self.key_values(n, &p("environment")) {
                let v = v.or_else(|| (self.lookup)(&k));
                s.environment.insert(k, v);
            }
        }
        if let Some(n) = f.get("extra_hosts") {
            s.extra_hosts = match &n.value {
                Value::Map(_) => self
                    .string_map(n, &p("extra_hosts"))
                    .into_iter()
                    .map(|(h, ip)| format!("{h}:{ip}"))
                    .collect(),
                _ => self.string_list(n, &p("extra_hosts")),
            };
            for (i, h) in s.extra_hosts.iter().enumerate() {
                if !h.contains(':') && !h.contains('=') {
                    self.err(
                        &n.pos,
                        &idx(&p("extra_hosts"), i),
                        format!("expected HOST:IP, got {h:?}"),
                    );
                }
            }
        }
        if let Some(n) = f.get("hostname") {
            s.hostname = self.string(n, &p("hostname"));
        }
        if let Some(n) = f.get("healthcheck") {
            s.healthcheck = self.healthcheck(n, &p("healthcheck"));
        }
        if let Some(n) = f.get("init") {
            s.init = self.boolean(n, &p("init"));
        }
        if let Some(n) = f.get("labels") {
            s.labels = self.labels(n, &p("labels"));
        }
        if let Some(n) = f.get("logging") {
            let lp = p("logging");
            if let Some(lf) = self.fields(n, &lp, &["driver", "options"], &[]) {
                let mut l = Logging::default();
                if let Some(d) = lf.get("driver") {
                    l.driver = self.string(d, &sub(&lp, "driver"));
                }
                if let Some(o) = lf.get("options") {
                    l.options = self.string_map(o, &sub(&lp, "options"));
                }
                s.logging = Some(l);
            }
        }
        if let Some(n) = f.get("networks") {
            s.networks = self.service_networks(n, &p("networks"));
        }
        if let Some(n) = f.get("ports") {
            s.ports = self.ports(n, &p("ports"));
        }
        if let Some(n) = f.get("read_only") {
            s.read_only = self.boolean(n, &p("read_only"));
        }
        if let Some(n) = f.get("stdin_open") {
            s.stdin_open = self.boolean(n, &p("stdin_open"));
        }
        if let Some(n) = f.get("tty") {
            s.tty = self.boolean(n, &p("tty"));
        }
        if let Some(n) = f.get("secrets") {
            s.secrets = self.file_refs(n, &p("secrets"));
        }
        if let Some(n) = f.get("configs") {
            s.configs = self.file_refs(n, &p("configs"));
        }
        if let Some(n) = f.get("stop_grace_period") {
            s.stop_grace_period = self.duration(n, &p("stop_grace_period"));
        }
        if let Some(n) = f.get("stop_signal") {
            s.stop_signal = self.string(n, &p("stop_signal"));
        }
        if let Some(n) = f.get("sysctls") {
            s.sysctls = self.labels(n, &p("sysctls"));
        }
        if let Some(n) = f.get("tmpfs") {
            s.tmpfs = self.string_or_list(n, &p("tmpfs"));
        }
        if let Some(n) = f.get("ulimits") {
            s.ulimits = self.ulimits(n, &p("ulimits"));
        }
        if let Some(n) = f.get("user") {
            s.user = self.string(n, &p("user"));
        }
        if let Some(n) = f.get("volumes") {
            s.volumes = self.service_volumes(n, &p("volumes"));
        }
        if let Some(n) = f.get("working_dir") {
            s.working_dir = self.string(n, &p("working_dir"));
        }
        if let Some(n) = f.get("deploy") {
            s.deploy = self.deploy(n, &p("deploy"));
        }
        s
    }

    pub(super) fn healthcheck(&mut self, node: &Node, path: &str) -> Option<Healthcheck> {
        let known = [
            "test",
            "interval",
            "timeout",
            "retries",
            "start_period",
            "start_interval",
            "disable",
        ];
        let f = self.fields(node, path, &known, &[])?;
        let mut h = Healthcheck::default();
        if let Some(n) = f.get("test") {
            let tp = sub(path, "test");
            h.test = match &n.value {
                Value::Str(s) => Some(vec!["CMD-SHELL".to_string(), s.clone()]),
                Value::Seq(_) => {
                    let list = self.string_list(n, &tp);
                    match list.first().map(String::as_str) {
                        Some("CMD") | Some("CMD-SHELL") | Some("NONE") => Some(list),
                        Some(other) => {
                            self.err(
                                &n.pos,
                                &tp,
                                format!("a test list must start with \"CMD\", \"CMD-SHELL\" or \"NONE\", got {other:?}"),
                            );
                            None
                        }
                        None => {
                            self.err(&n.pos, &tp, "the test list is empty");
                            None
                        }
                    }
                }
                _ => {
                    self.expected(n, &tp, "a string or a list");
                    None
                }
            };
        }
        if let Some(n) = f.get("interval") {
            h.interval = self.duration(n, &sub(path, "interval"));
        }
        if let Some(n) = f.get("timeout") {
            h.timeout = self.duration(n, &sub(path, "timeout"));
        }
        if let Some(n) = f.get("start_period") {
            h.start_period = self.duration(n, &sub(path, "start_period"));
        }
        if let Some(n) = f.get("start_interval") {
            h.start_interval = self.duration(n, &sub(path, "start_interval"));
        }
        if let Some(n) = f.get("retries") {
            h.retries = self.uint(n, &sub(path, "retries"));
        }
        if let Some(n) = f.get("disable") {
            if self.boolean(n, &sub(path, "disable")) == Some(true) {
                if h.test
                    .as_ref()
                    .is_some_and(|t| t.first().map(String::as_str) != Some("NONE"))
                {
                    self.err(
                        &n.pos,
                        &sub(path, "disable"),
                        "`disable: true` cannot be combined with `test`",
                    );
                }
                h.test = Some(vec!["NONE".to_string()]);
            }
        }
        Some(h)
    }

    pub(super) fn service_networks(
        &mut self,
        node: &Node,
        path: &str,
    ) -> BTreeMap<String, Option<ServiceNetwork>> {
        let mut out = BTreeMap::new();
        match &node.value {
            Value::Seq(_) => {
                for name in self.string_list(node, path) {
                    out.insert(name, None);
                }
            }
            Value::Map(entries) => {
                for (k, v) in entries {
                    let np = sub(path, &k.name);
                    if matches!(v.value, Value::Null) {
                        out.insert(k.name.clone(), None);
                        continue;
                    }
                    let known = ["aliases", "ipv4_address", "ipv6_address", "driver_opts"];
                    let Some(f) = self.fields(
                        v,
                        &np,
                        &known,
                        &["priority", "link_local_ips", "mac_address"],
                    ) else {
                        continue;
                    };
                    let mut sn = ServiceNetwork::default();
                    if let Some(n) = f.get("aliases") {
                        sn.aliases = self.string_list(n, &sub(&np, "aliases"));
                    }
                    if let Some(n) = f.get("ipv4_address") {
                        sn.ipv4_address = self.string(n, &sub(&np, "ipv4_address"));
                    }
                    if let Some(n) = f.get("ipv6_address") {
                        sn.ipv6_address = self.string(n, &sub(&np, "ipv6_address"));
                    }
                    if let Some(n) = f.get("driver_opts") {
                        sn.driver_opts = self.string_map(n, &sub(&np, "driver_opts"));
                    }
                    out.insert(k.name.clone(), Some(sn));
                }
            }
            Value::Null => {}
            _ => self.expected(node, path, "a list or a mapping of networks"),
        }
        out
    }

    pub(super) fn file_refs(&mut self, node: &Node, path: &str) -> Vec<FileRef> {
        let Some(items) = self.list(node, path) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let ip = idx(path, i);
            match &item.value {
                Value::Str(s) => out.push(FileRef {
                    source: s.clone(),
                    pos: item.pos.clone(),
                    ..Default::default()
                }),
                Value::Map(_) => {
                    let Some(f) =
                        self.fields(item, &ip, &["source", "target", "uid", "gid", "mode"], &[])
                    else {
                        continue;
                    };
                    let mut r = FileRef {
                        pos: item.pos.clone(),
                        ..Default::default()
                    };
                    match f.get("source") {
                        Some(n) => {
                            r.source = self.string(n, &sub(&ip, "source")).unwrap_or_default()
                        }
                        None => self.err(&item.pos, &ip, "missing `source`"),
                    }
                    if let Some(n) = f.get("target") {
                        r.target = self.string(n, &sub(&ip, "target"));
                    }
                    if let Some(n) = f.get("uid") {
                        r.uid = self.string(n, &sub(&ip, "uid"));
                    }
                    if let Some(n) = f.get("gid") {
                        r.gid = self.string(n, &sub(&ip, "gid"));
                    }
                    if let Some(n) = f.get("mode") {
                        let mp = sub(&ip, "mode");
                        r.mode = match &n.value {
                            Value::Str(s) => {
                                match u32::from_str_radix(s.trim_start_matches("0o"), 8) {
                                    Ok(m) => Some(m),
                                    Err(_) => {
                                        self.expected(n, &mp, "a file mode like 0440");
                                        None
                                    }
                                }
                            }
                            _ => self.uint(n, &mp).and_then(|m| u32::try_from(m).ok()),
                        };
                        if r.mode.is_some_and(|m| m > 0o7777) {
                            self.err(&n.pos, &mp, "file mode out of range (at most 07777)");
                        }
                    }
                    out.push(r);
                }
                _ => self.expected(item, &ip, "a name or a mapping with `source`"),
            }
        }
        out
    }

    pub(super) fn ulimits(&mut self, node: &Node, path: &str) -> BTreeMap<String, Ulimit> {
        let mut out = BTreeMap::new();
        let Value::Map(entries) = &node.value else {
            self.expected(node, path, "a mapping");
            return out;
        };
        for (k, v) in entries {
            let up = sub(path, &k.name);
            let limit = match &v.value {
                Value::Map(_) => {
                    let Some(f) = self.fields(v, &up, &["soft", "hard"], &[]) else {
                        continue;
                    };
                    let soft = f.get("soft").and_then(|n| self.int(n, &sub(&up, "soft")));
                    let hard = f.get("hard").and_then(|n| self.int(n, &sub(&up, "hard")));
                    match (soft, hard) {
                        (Some(soft), Some(hard)) => {
                            if soft > hard {
                                self.err(
                                    &v.pos,
                                    &up,
                                    format!("soft limit {soft} is above hard limit {hard}"),
                                );
                            }
                            Ulimit::Pair { soft, hard }
                        }
                        _ => {
                            self.err(&v.pos, &up, "needs both `soft` and `hard`");
                            continue;
                        }
                    }
                }
                _ => match self.int(v, &up) {
                    Some(i) => Ulimit::Single(i),
                    None => continue,
                },
            };
            out.insert(k.name.clone(), limit);
        }
        out
    }
}
