//! `ports:` in short (`8080:80/udp`, ranges) and long syntax.

use super::{idx, sub, Decoder};
use crate::stack::compose::*;
use crate::stack::yaml::{Node, Value};

impl Decoder<'_> {
    pub(super) fn port_number(&mut self, node: &Node, path: &str, text: &str) -> Option<u16> {
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

    pub(super) fn port_range(&mut self, node: &Node, path: &str, text: &str) -> Option<(u16, u16)> {
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

    pub(super) fn ports(&mut self, node: &Node, path: &str) -> Vec<Port> {
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
    pub(super) fn short_port(&mut self, node: &Node, path: &str, text: &str) -> Vec<Port> {
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
}
