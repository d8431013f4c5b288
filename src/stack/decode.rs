//! Parsed tree → typed, normalized `StackFile` for one file, collecting every problem with its place.
//!
//! Owns: the keys we accept (and the ones swarm ignores, which become one warning), short → long syntax, unit
//! parsing, environment files, relative paths. Must not: merge files or check cross-references (see `validate`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::compose::*;
use super::units::{parse_bytes, parse_duration, parse_nano_cpus, GoDuration};
use super::yaml::{Key, Node, Pos, Value};
use super::{Problem, ShellWords};

/// Keys of a service that `docker stack deploy` accepts but swarm does not use: a warning, not an error.
pub const IGNORED_SERVICE_KEYS: &[&str] = &[
    "build",
    "cgroup_parent",
    "cgroupns_mode",
    "container_name",
    "credential_spec",
    "depends_on",
    "develop",
    "devices",
    "domainname",
    "expose",
    "external_links",
    "ipc",
    "isolation",
    "links",
    "mac_address",
    "network_mode",
    "pid",
    "platform",
    "privileged",
    "profiles",
    "pull_policy",
    "restart",
    "security_opt",
    "shm_size",
    "userns_mode",
];

const SERVICE_KEYS: &[&str] = &[
    "cap_add",
    "cap_drop",
    "command",
    "configs",
    "deploy",
    "dns",
    "dns_search",
    "entrypoint",
    "env_file",
    "environment",
    "extra_hosts",
    "healthcheck",
    "hostname",
    "image",
    "init",
    "labels",
    "logging",
    "networks",
    "ports",
    "read_only",
    "secrets",
    "stdin_open",
    "stop_grace_period",
    "stop_signal",
    "sysctls",
    "tmpfs",
    "tty",
    "ulimits",
    "user",
    "volumes",
    "working_dir",
];

/// Decodes one file's tree.
pub struct Decoder<'a> {
    /// Problems found so far.
    pub problems: Vec<Problem>,
    /// Ignored keys seen (for the one warning line).
    pub ignored: BTreeSet<String>,
    dir: &'a Path,
    lookup: &'a dyn Fn(&str) -> Option<String>,
}

/// The entries of a mapping that passed the key check.
struct Fields<'n> {
    entries: Vec<(&'n Key, &'n Node)>,
}

impl<'n> Fields<'n> {
    fn get(&self, name: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(k, _)| k.name == name)
            .map(|(_, v)| *v)
    }
}

fn sub(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn idx(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// The known key closest to `key`, when it is close enough to be a likely typo.
pub fn suggest<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
    let limit = match key.len() {
        0..=3 => 1,
        4..=8 => 2,
        _ => 3,
    };
    known
        .iter()
        .map(|k| (levenshtein(key, k), *k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut cur = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
        }
        prev = cur;
    }
    prev[b.len()]
}

impl<'a> Decoder<'a> {
    /// A decoder for a file in `dir`, resolving pass-through environment variables with `lookup`.
    pub fn new(dir: &'a Path, lookup: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Decoder {
            problems: Vec::new(),
            ignored: BTreeSet::new(),
            dir,
            lookup,
        }
    }

    fn err(&mut self, pos: &Pos, path: &str, message: impl Into<String>) {
        self.problems.push(Problem::new(pos, path, message.into()));
    }

    fn expected(&mut self, node: &Node, path: &str, what: &str) {
        let got = node.show();
        self.err(&node.pos, path, format!("expected {what}, got {got}"));
    }

    fn fields<'n>(
        &mut self,
        node: &'n Node,
        path: &str,
        known: &[&str],
        ignored: &[&str],
    ) -> Option<Fields<'n>> {
        let entries = match &node.value {
            Value::Map(entries) => entries,
            Value::Null => {
                return Some(Fields {
                    entries: Vec::new(),
                })
            }
            _ => {
                self.expected(node, path, "a mapping");
                return None;
            }
        };
        let mut out = Vec::new();
        for (k, v) in entries {
            if k.name.starts_with("x-") {
                continue;
            }
            if known.contains(&k.name.as_str()) {
                out.push((k, v));
            } else if ignored.contains(&k.name.as_str()) {
                self.ignored.insert(k.name.clone());
            } else {
                let mut all: Vec<&str> = known.to_vec();
                all.extend_from_slice(ignored);
                let hint = match suggest(&k.name, &all) {
                    Some(s) => format!(" (did you mean `{s}`?)"),
                    None => String::new(),
                };
                self.err(
                    &k.pos,
                    &sub(path, &k.name),
                    format!("unknown key `{}`{hint}", k.name),
                );
            }
        }
        Some(Fields { entries: out })
    }

    fn string(&mut self, node: &Node, path: &str) -> Option<String> {
        match &node.value {
            Value::Str(s) => Some(s.clone()),
            Value::Int(i) => Some(i.to_string()),
            Value::Float(f) => Some(f.to_string()),
            _ => {
                self.expected(node, path, "a string");
                None
            }
        }
    }

    /// A string for a map value (labels, options): numbers and booleans are turned into text, null into "".
    fn text(&mut self, node: &Node, path: &str) -> Option<String> {
        match &node.value {
            Value::Str(s) => Some(s.clone()),
            Value::Int(i) => Some(i.to_string()),
            Value::Float(f) => Some(f.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Null => Some(String::new()),
            _ => {
                self.expected(node, path, "a string");
                None
            }
        }
    }

    /// A typed scalar: `direct` reads the YAML value; a string that came out of `${VAR}` interpolation is also
    /// accepted when `parse` reads its text (docker casts interpolated values the same way).
    fn scalar<T>(
        &mut self,
        node: &Node,
        path: &str,
        what: &str,
        direct: impl Fn(&Value) -> Option<T>,
        parse: impl Fn(&str) -> Option<T>,
    ) -> Option<T> {
        let value = match &node.value {
            Value::Str(s) if node.interpolated => parse(s.trim()),
            v => direct(v),
        };
        if value.is_none() {
            self.expected(node, path, what);
        }
        value
    }

    fn int(&mut self, node: &Node, path: &str) -> Option<i64> {
        let direct = |v: &Value| match v {
            Value::Int(i) => Some(*i),
            _ => None,
        };
        self.scalar(node, path, "an integer", direct, |s| s.parse().ok())
    }

    fn uint(&mut self, node: &Node, path: &str) -> Option<u64> {
        let i = self.int(node, path)?;
        match u64::try_from(i) {
            Ok(u) => Some(u),
            Err(_) => {
                self.err(
                    &node.pos,
                    path,
                    format!("expected a non-negative integer, got {i}"),
                );
                None
            }
        }
    }

    fn float(&mut self, node: &Node, path: &str) -> Option<f64> {
        let direct = |v: &Value| match v {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            _ => None,
        };
        self.scalar(node, path, "a number", direct, |s| s.parse().ok())
    }

    fn boolean(&mut self, node: &Node, path: &str) -> Option<bool> {
        let direct = |v: &Value| match v {
            Value::Bool(b) => Some(*b),
            _ => None,
        };
        let parse = |s: &str| match s.to_ascii_lowercase().as_str() {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        };
        self.scalar(node, path, "a boolean (true or false)", direct, parse)
    }

    fn duration(&mut self, node: &Node, path: &str) -> Option<GoDuration> {
        let text = match &node.value {
            Value::Str(s) => s.clone(),
            Value::Int(0) => "0".to_string(),
            _ => {
                self.expected(node, path, "a duration like \"10s\" or \"1m30s\"");
                return None;
            }
        };
        match parse_duration(&text) {
            Ok(d) => Some(GoDuration(d)),
            Err(e) => {
                self.err(&node.pos, path, e);
                None
            }
        }
    }

    fn bytes(&mut self, node: &Node, path: &str) -> Option<u64> {
        match &node.value {
            Value::Int(i) if *i >= 0 => Some(*i as u64),
            Value::Str(s) => match parse_bytes(s) {
                Ok(b) => Some(b),
                Err(e) => {
                    self.err(&node.pos, path, e);
                    None
                }
            },
            _ => {
                self.expected(node, path, "a size like \"512M\" or \"1g\"");
                None
            }
        }
    }

    fn enumerated<T: Copy>(&mut self, node: &Node, path: &str, options: &[(&str, T)]) -> Option<T> {
        let s = self.string(node, path)?;
        match options.iter().find(|(name, _)| *name == s) {
            Some((_, v)) => Some(*v),
            None => {
                let names: Vec<String> = options.iter().map(|(n, _)| format!("{n:?}")).collect();
                self.err(
                    &node.pos,
                    path,
                    format!("expected one of {}, got {s:?}", names.join(", ")),
                );
                None
            }
        }
    }

    fn list<'n>(&mut self, node: &'n Node, path: &str) -> Option<&'n [Node]> {
        match &node.value {
            Value::Seq(items) => Some(items),
            _ => {
                self.expected(node, path, "a list");
                None
            }
        }
    }

    fn string_list(&mut self, node: &Node, path: &str) -> Vec<String> {
        let Some(items) = self.list(node, path) else {
            return Vec::new();
        };
        items
            .iter()
            .enumerate()
            .filter_map(|(i, n)| self.string(n, &idx(path, i)))
            .collect()
    }

    fn string_or_list(&mut self, node: &Node, path: &str) -> Vec<String> {
        match &node.value {
            Value::Str(s) => vec![s.clone()],
            Value::Null => Vec::new(),
            _ => self.string_list(node, path),
        }
    }

    /// A command or entrypoint: a string is split like a shell would (no expansion), a list is taken as is.
    fn command(&mut self, node: &Node, path: &str) -> Option<Vec<String>> {
        match &node.value {
            Value::Str(s) => match ShellWords::split(s) {
                Ok(words) => Some(words),
                Err(e) => {
                    self.err(&node.pos, path, e);
                    None
                }
            },
            Value::Null => None,
            _ => Some(self.string_list(node, path)),
        }
    }

    /// `KEY=VALUE` list or mapping → map; `None` values are keys given without a value.
    fn key_values(&mut self, node: &Node, path: &str) -> BTreeMap<String, Option<String>> {
        let mut out = BTreeMap::new();
        match &node.value {
            Value::Map(entries) => {
                for (k, v) in entries {
                    let value = match &v.value {
                        Value::Null => None,
                        Value::Map(_) | Value::Seq(_) => {
                            self.expected(v, &sub(path, &k.name), "a string, number or null");
                            continue;
                        }
                        _ => self.text(v, &sub(path, &k.name)),
                    };
                    out.insert(k.name.clone(), value);
                }
            }
            Value::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    let Some(s) = self.string(item, &idx(path, i)) else {
                        continue;
                    };
                    match s.split_once('=') {
                        Some((k, v)) => out.insert(k.to_string(), Some(v.to_string())),
                        None => out.insert(s, None),
                    };
                }
            }
            Value::Null => {}
            _ => self.expected(node, path, "a mapping or a list of KEY=VALUE"),
        }
        out
    }

    fn labels(&mut self, node: &Node, path: &str) -> BTreeMap<String, String> {
        self.key_values(node, path)
            .into_iter()
            .map(|(k, v)| (k, v.unwrap_or_default()))
            .collect()
    }

    fn string_map(&mut self, node: &Node, path: &str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        match &node.value {
            Value::Map(entries) => {
                for (k, v) in entries {
                    if let Some(s) = self.text(v, &sub(path, &k.name)) {
                        out.insert(k.name.clone(), s);
                    }
                }
            }
            Value::Null => {}
            _ => self.expected(node, path, "a mapping"),
        }
        out
    }

    fn resolve_path(&self, p: &str) -> String {
        let expanded = if let Some(rest) = p.strip_prefix("~/") {
            match (self.lookup)("HOME").or_else(|| std::env::var("HOME").ok()) {
                Some(home) => PathBuf::from(home).join(rest),
                None => PathBuf::from(p),
            }
        } else {
            PathBuf::from(p)
        };
        if expanded.is_absolute() {
            // an absolute path is kept as written (docker does not clean it: `/var/lib/docker/` stays)
            return expanded.to_string_lossy().into_owned();
        }
        normalize_path(&self.dir.join(expanded))
            .to_string_lossy()
            .into_owned()
    }

    /// Decodes a whole file.
    pub fn file(&mut self, root: &Node) -> StackFile {
        let mut out = StackFile::default();
        let known = [
            "version", "name", "services", "networks", "volumes", "secrets", "configs",
        ];
        let Some(f) = self.fields(root, "", &known, &[]) else {
            return out;
        };
        if let Some(n) = f.get("version") {
            out.version = self.text(n, "version");
        }
        if let Some(n) = f.get("services") {
            match &n.value {
                Value::Map(entries) => {
                    for (k, v) in entries {
                        if k.name.starts_with("x-") {
                            continue;
                        }
                        let svc = self.service(v, &sub("services", &k.name), &k.pos);
                        out.services.insert(k.name.clone(), svc);
                    }
                }
                Value::Null => {}
                _ => self.expected(n, "services", "a mapping of service names to services"),
            }
        }
        self.named(&f, "networks", &mut out.networks, Self::network);
        self.named(&f, "volumes", &mut out.volumes, Self::volume);
        self.named(&f, "secrets", &mut out.secrets, |d, n, p, pos| {
            d.file_object(n, p, pos, "secret")
        });
        self.named(&f, "configs", &mut out.configs, |d, n, p, pos| {
            d.file_object(n, p, pos, "config")
        });
        out
    }

    fn named<T>(
        &mut self,
        f: &Fields,
        key: &str,
        out: &mut BTreeMap<String, T>,
        decode: impl Fn(&mut Self, &Node, &str, &Pos) -> T,
    ) {
        let Some(n) = f.get(key) else { return };
        match &n.value {
            Value::Map(entries) => {
                for (k, v) in entries {
                    if k.name.starts_with("x-") {
                        continue;
                    }
                    let item = decode(self, v, &sub(key, &k.name), &k.pos);
                    out.insert(k.name.clone(), item);
                }
            }
            Value::Null => {}
            _ => self.expected(n, key, "a mapping"),
        }
    }

    fn service(&mut self, node: &Node, path: &str, key_pos: &Pos) -> Service {
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
            let resolved: Vec<String> = s.env_file.iter().map(|f| self.resolve_path(f)).collect();
            for (i, file) in resolved.iter().enumerate() {
                match std::fs::read_to_string(file) {
                    Ok(text) => {
                        for (k, v) in parse_env_file(&text) {
                            let v = v.or_else(|| (self.lookup)(&k));
                            s.environment.insert(k, v);
                        }
                    }
                    Err(e) => {
                        let pos = match &n.value {
                            Value::Seq(items) => {
                                items.get(i).map(|x| x.pos.clone()).unwrap_or(n.pos.clone())
                            }
                            _ => n.pos.clone(),
                        };
                        self.err(
                            &pos,
                            &p("env_file"),
                            format!("cannot read env file {file}: {e}"),
                        );
                    }
                }
            }
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

    fn healthcheck(&mut self, node: &Node, path: &str) -> Option<Healthcheck> {
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

    fn service_networks(
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

    fn port_number(&mut self, node: &Node, path: &str, text: &str) -> Option<u16> {
        match text.trim().parse::<u32>() {
            Ok(n) if (1..=65535).contains(&n) => Some(n as u16),
            Ok(n) => {
                self.err(&node.pos, path, format!("port {n} is out of range 1-65535"));
                None
            }
            Err(_) => {
                self.err(&node.pos, path, format!("invalid port {text:?}"));
                None
            }
        }
    }

    fn port_range(&mut self, node: &Node, path: &str, text: &str) -> Option<(u16, u16)> {
        match text.split_once('-') {
            Some((a, b)) => {
                let a = self.port_number(node, path, a)?;
                let b = self.port_number(node, path, b)?;
                if b < a {
                    self.err(&node.pos, path, format!("invalid port range {text:?}"));
                    return None;
                }
                Some((a, b))
            }
            None => {
                let p = self.port_number(node, path, text)?;
                Some((p, p))
            }
        }
    }

    fn ports(&mut self, node: &Node, path: &str) -> Vec<Port> {
        let Some(items) = self.list(node, path) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let ip = idx(path, i);
            match &item.value {
                Value::Int(_) | Value::Str(_) => {
                    let text = match &item.value {
                        Value::Int(n) => n.to_string(),
                        Value::Str(s) => s.clone(),
                        _ => unreachable!(),
                    };
                    out.extend(self.short_port(item, &ip, &text));
                }
                Value::Map(_) => {
                    let known = [
                        "target",
                        "published",
                        "protocol",
                        "mode",
                        "host_ip",
                        "name",
                        "app_protocol",
                    ];
                    let Some(f) = self.fields(item, &ip, &known, &[]) else {
                        continue;
                    };
                    let target = match f.get("target") {
                        Some(n) => {
                            let t = self.text(n, &sub(&ip, "target")).unwrap_or_default();
                            self.port_number(n, &sub(&ip, "target"), &t)
                        }
                        None => {
                            self.err(&item.pos, &ip, "a port needs a `target`");
                            None
                        }
                    };
                    let published = f.get("published").and_then(|n| {
                        let t = self.text(n, &sub(&ip, "published")).unwrap_or_default();
                        self.port_number(n, &sub(&ip, "published"), &t)
                    });
                    let protocol = f
                        .get("protocol")
                        .and_then(|n| {
                            self.enumerated(
                                n,
                                &sub(&ip, "protocol"),
                                &[
                                    ("tcp", Protocol::Tcp),
                                    ("udp", Protocol::Udp),
                                    ("sctp", Protocol::Sctp),
                                ],
                            )
                        })
                        .unwrap_or(Protocol::Tcp);
                    let mode = f
                        .get("mode")
                        .and_then(|n| {
                            self.enumerated(
                                n,
                                &sub(&ip, "mode"),
                                &[("ingress", PortMode::Ingress), ("host", PortMode::Host)],
                            )
                        })
                        .unwrap_or(PortMode::Ingress);
                    if let Some(target) = target {
                        out.push(Port {
                            mode,
                            target,
                            published,
                            protocol,
                        });
                    }
                }
                _ => self.expected(item, &ip, "a port like \"8080:80\" or a mapping"),
            }
        }
        out
    }

    /// `[HOST_IP:][PUBLISHED[-END]:]TARGET[-END][/PROTOCOL]`
    fn short_port(&mut self, node: &Node, path: &str, text: &str) -> Vec<Port> {
        let (spec, proto) = match text.rsplit_once('/') {
            Some((s, p)) => (s, p),
            None => (text, "tcp"),
        };
        let protocol = match proto {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            "sctp" => Protocol::Sctp,
            other => {
                self.err(
                    &node.pos,
                    path,
                    format!("invalid protocol {other:?} in port {text:?} (tcp, udp or sctp)"),
                );
                return Vec::new();
            }
        };
        // IPv6 host addresses are bracketed: [::1]:80:80
        let spec = match spec.strip_prefix('[') {
            Some(rest) => match rest.split_once("]:") {
                Some((_, tail)) => tail,
                None => {
                    self.err(&node.pos, path, format!("invalid port {text:?}"));
                    return Vec::new();
                }
            },
            None => spec,
        };
        let parts: Vec<&str> = spec.split(':').collect();
        let (published, target) = match parts.as_slice() {
            [t] => (None, *t),
            [p, t] => (Some(*p), *t),
            [_ip, p, t] => (if p.is_empty() { None } else { Some(*p) }, *t),
            _ => {
                self.err(
                    &node.pos,
                    path,
                    format!("invalid port {text:?}: expected [HOST:]PUBLISHED:TARGET[/PROTOCOL]"),
                );
                return Vec::new();
            }
        };
        let Some((t0, t1)) = self.port_range(node, path, target) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        match published {
            None => {
                for t in t0..=t1 {
                    out.push(Port {
                        mode: PortMode::Ingress,
                        target: t,
                        published: None,
                        protocol,
                    });
                }
            }
            Some(p) => {
                let Some((p0, p1)) = self.port_range(node, path, p) else {
                    return Vec::new();
                };
                if p1 - p0 != t1 - t0 {
                    if t0 == t1 {
                        // a published range onto one target: docker publishes the first
                        out.push(Port {
                            mode: PortMode::Ingress,
                            target: t0,
                            published: Some(p0),
                            protocol,
                        });
                        return out;
                    }
                    self.err(
                        &node.pos,
                        path,
                        format!("port ranges in {text:?} have different sizes"),
                    );
                    return Vec::new();
                }
                for k in 0..=(t1 - t0) {
                    out.push(Port {
                        mode: PortMode::Ingress,
                        target: t0 + k,
                        published: Some(p0 + k),
                        protocol,
                    });
                }
            }
        }
        out
    }

    fn file_refs(&mut self, node: &Node, path: &str) -> Vec<FileRef> {
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

    fn ulimits(&mut self, node: &Node, path: &str) -> BTreeMap<String, Ulimit> {
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

    fn service_volumes(&mut self, node: &Node, path: &str) -> Vec<ServiceVolume> {
        let Some(items) = self.list(node, path) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let ip = idx(path, i);
            match &item.value {
                Value::Str(s) => {
                    if let Some(v) = self.short_volume(item, &ip, s) {
                        out.push(v);
                    }
                }
                Value::Map(_) => {
                    let known = [
                        "type",
                        "source",
                        "target",
                        "read_only",
                        "consistency",
                        "bind",
                        "volume",
                        "tmpfs",
                    ];
                    let Some(f) = self.fields(item, &ip, &known, &["image"]) else {
                        continue;
                    };
                    let mut v = ServiceVolume {
                        pos: item.pos.clone(),
                        ..Default::default()
                    };
                    match f.get("type") {
                        Some(n) => {
                            v.kind = self
                                .enumerated(
                                    n,
                                    &sub(&ip, "type"),
                                    &[
                                        ("volume", VolumeKind::Volume),
                                        ("bind", VolumeKind::Bind),
                                        ("tmpfs", VolumeKind::Tmpfs),
                                        ("npipe", VolumeKind::Npipe),
                                        ("cluster", VolumeKind::Cluster),
                                    ],
                                )
                                .unwrap_or_default()
                        }
                        None => self.err(
                            &item.pos,
                            &ip,
                            "a mount needs a `type` (volume, bind or tmpfs)",
                        ),
                    }
                    if let Some(n) = f.get("source") {
                        v.source = self.string(n, &sub(&ip, "source"));
                    }
                    if v.kind == VolumeKind::Bind {
                        v.source = v.source.map(|s| self.resolve_path(&s));
                    }
                    match f.get("target") {
                        Some(n) => {
                            v.target = self.string(n, &sub(&ip, "target")).unwrap_or_default()
                        }
                        None => self.err(&item.pos, &ip, "a mount needs a `target`"),
                    }
                    if let Some(n) = f.get("read_only") {
                        v.read_only = self.boolean(n, &sub(&ip, "read_only")).unwrap_or(false);
                    }
                    if let Some(n) = f.get("consistency") {
                        v.consistency = self.string(n, &sub(&ip, "consistency"));
                    }
                    if let Some(n) = f.get("bind") {
                        let bp = sub(&ip, "bind");
                        if let Some(bf) =
                            self.fields(n, &bp, &["propagation"], &["create_host_path", "selinux"])
                        {
                            let propagation = bf
                                .get("propagation")
                                .and_then(|p| self.string(p, &sub(&bp, "propagation")));
                            v.bind = Some(BindOptions { propagation });
                        }
                    }
                    if let Some(n) = f.get("volume") {
                        let vp = sub(&ip, "volume");
                        if let Some(vf) = self.fields(n, &vp, &["nocopy"], &["subpath"]) {
                            let nocopy = vf
                                .get("nocopy")
                                .and_then(|p| self.boolean(p, &sub(&vp, "nocopy")))
                                .unwrap_or(false);
                            v.volume = Some(VolumeOptions { nocopy });
                        }
                    }
                    if let Some(n) = f.get("tmpfs") {
                        let tp = sub(&ip, "tmpfs");
                        if let Some(tf) = self.fields(n, &tp, &["size", "mode"], &[]) {
                            let size = tf
                                .get("size")
                                .and_then(|p| self.bytes(p, &sub(&tp, "size")));
                            let mode = tf
                                .get("mode")
                                .and_then(|p| self.uint(p, &sub(&tp, "mode")))
                                .map(|m| m as u32);
                            v.tmpfs = Some(TmpfsOptions { size, mode });
                        }
                    }
                    out.push(v);
                }
                _ => self.expected(
                    item,
                    &ip,
                    "a mount like \"data:/var/lib/data\" or a mapping",
                ),
            }
        }
        out
    }

    /// `[SOURCE:]TARGET[:MODE]`
    fn short_volume(&mut self, node: &Node, path: &str, text: &str) -> Option<ServiceVolume> {
        let parts: Vec<&str> = text.split(':').collect();
        let (source, target, mode) = match parts.as_slice() {
            [t] => (None, *t, None),
            [s, t] if t.starts_with('/') => (Some(*s), *t, None),
            [t, m] => (None, *t, Some(*m)),
            [s, t, m] => (Some(*s), *t, Some(*m)),
            _ => {
                self.err(
                    &node.pos,
                    path,
                    format!("invalid mount {text:?}: expected [SOURCE:]TARGET[:MODE]"),
                );
                return None;
            }
        };
        if target.is_empty() {
            self.err(
                &node.pos,
                path,
                format!("invalid mount {text:?}: empty target"),
            );
            return None;
        }
        let mut v = ServiceVolume {
            target: target.to_string(),
            pos: node.pos.clone(),
            ..Default::default()
        };
        match source {
            Some(s) if s.starts_with('/') || s.starts_with('.') || s.starts_with('~') => {
                v.kind = VolumeKind::Bind;
                v.source = Some(self.resolve_path(s));
            }
            Some(s) => {
                v.kind = VolumeKind::Volume;
                v.source = Some(s.to_string());
            }
            None => v.kind = VolumeKind::Volume,
        }
        for opt in mode.unwrap_or("").split(',').filter(|o| !o.is_empty()) {
            match opt {
                "ro" => v.read_only = true,
                "rw" => v.read_only = false,
                "nocopy" => v.volume = Some(VolumeOptions { nocopy: true }),
                "cached" | "delegated" | "consistent" => v.consistency = Some(opt.to_string()),
                "z" | "Z" => {}
                "shared" | "rshared" | "slave" | "rslave" | "private" | "rprivate" => {
                    v.bind = Some(BindOptions {
                        propagation: Some(opt.to_string()),
                    })
                }
                other => {
                    self.err(
                        &node.pos,
                        path,
                        format!("invalid mount option {other:?} in {text:?}"),
                    );
                }
            }
        }
        Some(v)
    }

    fn deploy(&mut self, node: &Node, path: &str) -> Option<Deploy> {
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

    fn update_config(&mut self, node: &Node, path: &str) -> Option<UpdateConfig> {
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

    fn resources(&mut self, node: &Node, path: &str) -> Option<Resources> {
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

    fn resource_values(
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

    fn external(&mut self, node: &Node, path: &str) -> (bool, Option<String>) {
        match &node.value {
            Value::Map(_) => match self.fields(node, path, &["name"], &[]) {
                Some(f) => (
                    true,
                    f.get("name")
                        .and_then(|n| self.string(n, &sub(path, "name"))),
                ),
                None => (true, None),
            },
            _ => (self.boolean(node, path).unwrap_or(false), None),
        }
    }

    fn network(&mut self, node: &Node, path: &str, _pos: &Pos) -> Network {
        let mut n = Network::default();
        let known = [
            "name",
            "driver",
            "driver_opts",
            "ipam",
            "external",
            "internal",
            "attachable",
            "labels",
        ];
        let Some(f) = self.fields(node, path, &known, &["enable_ipv6"]) else {
            return n;
        };
        if let Some(x) = f.get("name") {
            n.name = self.string(x, &sub(path, "name"));
        }
        if let Some(x) = f.get("driver") {
            n.driver = self.string(x, &sub(path, "driver"));
        }
        if let Some(x) = f.get("driver_opts") {
            n.driver_opts = self.string_map(x, &sub(path, "driver_opts"));
        }
        if let Some(x) = f.get("ipam") {
            let ip = sub(path, "ipam");
            if let Some(fi) = self.fields(x, &ip, &["driver", "config"], &["options"]) {
                let mut ipam = Ipam::default();
                if let Some(d) = fi.get("driver") {
                    ipam.driver = self.string(d, &sub(&ip, "driver"));
                }
                if let Some(c) = fi.get("config") {
                    let cp = sub(&ip, "config");
                    if let Some(items) = self.list(c, &cp) {
                        for (i, item) in items.iter().enumerate() {
                            let pp = idx(&cp, i);
                            if let Some(pf) = self.fields(
                                item,
                                &pp,
                                &["subnet"],
                                &["ip_range", "gateway", "aux_addresses"],
                            ) {
                                let subnet = pf
                                    .get("subnet")
                                    .and_then(|s| self.string(s, &sub(&pp, "subnet")));
                                ipam.config.push(IpamPool { subnet });
                            }
                        }
                    }
                }
                n.ipam = Some(ipam);
            }
        }
        if let Some(x) = f.get("external") {
            let (ext, name) = self.external(x, &sub(path, "external"));
            n.external = ext;
            if name.is_some() {
                n.name = name;
            }
        }
        if let Some(x) = f.get("internal") {
            n.internal = self.boolean(x, &sub(path, "internal")).unwrap_or(false);
        }
        if let Some(x) = f.get("attachable") {
            n.attachable = self.boolean(x, &sub(path, "attachable")).unwrap_or(false);
        }
        if let Some(x) = f.get("labels") {
            n.labels = self.labels(x, &sub(path, "labels"));
        }
        if n.external && n.name.is_none() {
            n.name = path.rsplit_once('.').map(|(_, k)| k.to_string());
        }
        n
    }

    fn volume(&mut self, node: &Node, path: &str, _pos: &Pos) -> Volume {
        let mut v = Volume::default();
        let Some(f) = self.fields(
            node,
            path,
            &["name", "driver", "driver_opts", "external", "labels"],
            &[],
        ) else {
            return v;
        };
        if let Some(x) = f.get("name") {
            v.name = self.string(x, &sub(path, "name"));
        }
        if let Some(x) = f.get("driver") {
            v.driver = self.string(x, &sub(path, "driver"));
        }
        if let Some(x) = f.get("driver_opts") {
            v.driver_opts = self.string_map(x, &sub(path, "driver_opts"));
        }
        if let Some(x) = f.get("external") {
            let (ext, name) = self.external(x, &sub(path, "external"));
            v.external = ext;
            if name.is_some() {
                v.name = name;
            }
        }
        if let Some(x) = f.get("labels") {
            v.labels = self.labels(x, &sub(path, "labels"));
        }
        if v.external && v.name.is_none() {
            v.name = path.rsplit_once('.').map(|(_, k)| k.to_string());
        }
        v
    }

    fn file_object(&mut self, node: &Node, path: &str, pos: &Pos, kind: &str) -> FileObject {
        let mut o = FileObject {
            pos: pos.clone(),
            ..Default::default()
        };
        let known = ["name", "file", "external", "labels", "template_driver"];
        let Some(f) = self.fields(
            node,
            path,
            &known,
            &["driver", "driver_opts", "environment", "content"],
        ) else {
            return o;
        };
        if let Some(x) = f.get("name") {
            o.name = self.string(x, &sub(path, "name"));
        }
        if let Some(x) = f.get("file") {
            o.file = self
                .string(x, &sub(path, "file"))
                .map(|p| self.resolve_path(&p));
        }
        if let Some(x) = f.get("external") {
            let (ext, name) = self.external(x, &sub(path, "external"));
            o.external = ext;
            if name.is_some() {
                o.name = name;
            }
        }
        if let Some(x) = f.get("labels") {
            o.labels = self.labels(x, &sub(path, "labels"));
        }
        if let Some(x) = f.get("template_driver") {
            o.template_driver = self.string(x, &sub(path, "template_driver"));
        }
        if o.external {
            if o.file.is_some() {
                self.err(
                    pos,
                    path,
                    format!("an external {kind} cannot have a `file`"),
                );
            }
            if o.name.is_none() {
                o.name = path.rsplit_once('.').map(|(_, k)| k.to_string());
            }
        }
        o
    }
}

/// Lexically normalizes a path (`a/./b/../c` → `a/c`) without touching the file system.
pub fn normalize_path(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// Parses an `env_file` the way docker does: `KEY=VALUE` per line (value taken literally), `#` comments,
/// a bare `KEY` takes its value from the environment.
pub fn parse_env_file(text: &str) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        match trimmed.split_once('=') {
            Some((k, v)) => out.push((k.trim().to_string(), Some(v.to_string()))),
            None => out.push((trimmed.trim().to_string(), None)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        assert_eq!(
            suggest("paralellism", &["parallelism", "delay"]),
            Some("parallelism")
        );
        assert_eq!(suggest("imgae", SERVICE_KEYS), Some("image"));
        assert_eq!(suggest("zzzzzz", SERVICE_KEYS), None);
    }

    #[test]
    fn env_files() {
        let parsed = parse_env_file("# c\nA=1\n  B=two words\nC\nD=\n");
        assert_eq!(
            parsed,
            vec![
                ("A".into(), Some("1".into())),
                ("B".into(), Some("two words".into())),
                ("C".into(), None),
                ("D".into(), Some(String::new())),
            ]
        );
    }

    #[test]
    fn paths() {
        assert_eq!(
            normalize_path(Path::new("/a/./b/../c")),
            PathBuf::from("/a/c")
        );
    }
}
