//! Parsed tree → typed, normalized `StackFile` for one file, collecting every problem with its place.
//!
//! Owns: the keys we accept (and the ones swarm ignores, which become one warning), short → long syntax, unit
//! parsing, environment files, relative paths. Must not: merge files or check cross-references (see `validate`).
//!
//! One `Decoder` type, its methods grouped by concern in the children: `scalars` (typed scalars and problem
//! collection), `services`, `ports`, `volumes` (mounts), `deploy`, `objects` (top-level networks, volumes,
//! secrets, configs) and `env` (env files, read through an injected `ReadFile`).

mod deploy;
mod env;
mod objects;
mod ports;
mod scalars;
mod services;
mod volumes;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::compose::StackFile;
use super::yaml::{Key, Node, Pos, Value};
use super::Problem;

pub use env::{parse_env_file, read_real_file, ReadFile};
pub use scalars::suggest;

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
    read: ReadFile<'a>,
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

impl<'a> Decoder<'a> {
    /// A decoder for a file in `dir`, resolving pass-through environment variables with `lookup` and reading
    /// env files from the real file system.
    pub fn new(dir: &'a Path, lookup: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Decoder {
            problems: Vec::new(),
            ignored: BTreeSet::new(),
            dir,
            lookup,
            read: &read_real_file,
        }
    }

    /// The same decoder reading env files with `read` instead (tests use in-memory files).
    pub fn with_reader(mut self, read: ReadFile<'a>) -> Self {
        self.read = read;
        self
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
    fn paths() {
        assert_eq!(
            normalize_path(Path::new("/a/./b/../c")),
            PathBuf::from("/a/c")
        );
    }
}
