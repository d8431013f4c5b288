//! The typed-scalar helpers (strings, numbers, booleans, durations, sizes, lists, maps) and the problem
//! collection: every helper records what is wrong at the node's place and returns `None` or an empty value.

use std::collections::BTreeMap;

use super::{idx, sub, Decoder, Fields};
use crate::stack::units::{parse_bytes, parse_duration, GoDuration};
use crate::stack::yaml::{Node, Pos, Value};
use crate::stack::{Problem, ShellWords};

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

impl Decoder<'_> {
    pub(super) fn err(&mut self, pos: &Pos, path: &str, message: impl Into<String>) {
        self.problems.push(Problem::new(pos, path, message.into()));
    }

    pub(super) fn expected(&mut self, node: &Node, path: &str, what: &str) {
        let got = node.show();
        self.err(&node.pos, path, format!("expected {what}, got {got}"));
    }

    pub(super) fn fields<'n>(
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

    pub(super) fn string(&mut self, node: &Node, path: &str) -> Option<String> {
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
    pub(super) fn text(&mut self, node: &Node, path: &str) -> Option<String> {
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
    pub(super) fn scalar<T>(
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

    pub(super) fn int(&mut self, node: &Node, path: &str) -> Option<i64> {
        let direct = |v: &Value| match v {
            Value::Int(i) => Some(*i),
            _ => None,
        };
        self.scalar(node, path, "an integer", direct, |s| s.parse().ok())
    }

    pub(super) fn uint(&mut self, node: &Node, path: &str) -> Option<u64> {
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

    pub(super) fn float(&mut self, node: &Node, path: &str) -> Option<f64> {
        let direct = |v: &Value| match v {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            _ => None,
        };
        self.scalar(node, path, "a number", direct, |s| s.parse().ok())
    }

    pub(super) fn boolean(&mut self, node: &Node, path: &str) -> Option<bool> {
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

    pub(super) fn duration(&mut self, node: &Node, path: &str) -> Option<GoDuration> {
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

    pub(super) fn bytes(&mut self, node: &Node, path: &str) -> Option<u64> {
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

    pub(super) fn enumerated<T: Copy>(
        &mut self,
        node: &Node,
        path: &str,
        options: &[(&str, T)],
    ) -> Option<T> {
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

    pub(super) fn list<'n>(&mut self, node: &'n Node, path: &str) -> Option<&'n [Node]> {
        match &node.value {
            Value::Seq(items) => Some(items),
            _ => {
                self.expected(node, path, "a list");
                None
            }
        }
    }

    pub(super) fn string_list(&mut self, node: &Node, path: &str) -> Vec<String> {
        let Some(items) = self.list(node, path) else {
            return Vec::new();
        };
        items
            .iter()
            .enumerate()
            .filter_map(|(i, n)| self.string(n, &idx(path, i)))
            .collect()
    }

    pub(super) fn string_or_list(&mut self, node: &Node, path: &str) -> Vec<String> {
        match &node.value {
            Value::Str(s) => vec![s.clone()],
            Value::Null => Vec::new(),
            _ => self.string_list(node, path),
        }
    }

    /// A command or entrypoint: a string is split like a shell would (no expansion), a list is taken as is.
    pub(super) fn command(&mut self, node: &Node, path: &str) -> Option<Vec<String>> {
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
    pub(super) fn key_values(
        &mut self,
        node: &Node,
        path: &str,
    ) -> BTreeMap<String, Option<String>> {
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

    pub(super) fn labels(&mut self, node: &Node, path: &str) -> BTreeMap<String, String> {
        self.key_values(node, path)
            .into_iter()
            .map(|(k, v)| (k, v.unwrap_or_default()))
            .collect()
    }

    pub(super) fn string_map(&mut self, node: &Node, path: &str) -> BTreeMap<String, String> {
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
}
