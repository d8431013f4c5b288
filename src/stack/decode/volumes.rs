//! A service's `volumes:` (mounts) in short (`SOURCE:TARGET:MODE`) and long syntax.

use super::{idx, sub, Decoder};
use crate::stack::compose::*;
use crate::stack::yaml::{Node, Value};

impl Decoder<'_> {
    pub(super) fn service_volumes(&mut self, node: &Node, path: &str) -> Vec<ServiceVolume> {
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
    pub(super) fn short_volume(
        &mut self,
        node: &Node,
        path: &str,
        text: &str,
    ) -> Option<ServiceVolume> {
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
}
