//! The top-level objects: networks, volumes, secrets and configs.

use super::{idx, sub, Decoder};
use crate::stack::compose::*;
use crate::stack::yaml::{Node, Pos, Value};

impl Decoder<'_> {
    pub(super) fn external(&mut self, node: &Node, path: &str) -> (bool, Option<String>) {
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

    pub(super) fn network(&mut self, node: &Node, path: &str, _pos: &Pos) -> Network {
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

    pub(super) fn volume(&mut self, node: &Node, path: &str, _pos: &Pos) -> Volume {
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

    pub(super) fn file_object(
        &mut self,
        node: &Node,
        path: &str,
        pos: &Pos,
        kind: &str,
    ) -> FileObject {
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
