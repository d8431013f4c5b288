//! YAML text → a position-carrying tree (`Node`).
//!
//! Owns: parsing one YAML document with serde-saphyr (anchors, aliases and `<<` merge keys resolved by the
//! parser, YAML 1.2 booleans, legacy octal `0440` like docker's yaml.v3) into `Node`s that remember the file, line
//! and column they came from, so every later stage can name the place of a problem. Must not: interpret keys.

use std::fmt;
use std::sync::Arc;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_saphyr::Spanned;

/// Where a node came from: file, 1-based line and column (0 when unknown).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Pos {
    /// The file the node was read from, as the user named it.
    pub file: Arc<str>,
    /// 1-based line; 0 when unknown.
    pub line: u32,
    /// 1-based column; 0 when unknown.
    pub col: u32,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.file)
        } else {
            write!(f, "{}:{}:{}", self.file, self.line, self.col)
        }
    }
}

/// A YAML value with its position.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// Where the value starts.
    pub pos: Pos,
    /// The value.
    pub value: Value,
    /// True when the scalar text came out of `${VAR}` interpolation: numeric and boolean fields then accept
    /// its text form (`replicas: ${N}`), as docker does.
    pub interpolated: bool,
}

/// A YAML value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// `~`, `null` or an empty value.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A floating point number.
    Float(f64),
    /// A string.
    Str(String),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in file order; keys are strings.
    Map(Vec<(Key, Node)>),
}

/// A mapping key with its position.
#[derive(Clone, Debug, PartialEq)]
pub struct Key {
    /// The key text (non-string scalar keys are turned into their text).
    pub name: String,
    /// Where the key stands.
    pub pos: Pos,
}

impl Node {
    /// A node with no position (made by the program, not read from a file).
    pub fn synthetic(value: Value) -> Node {
        Node {
            pos: Pos::default(),
            value,
            interpolated: false,
        }
    }

    /// The kind of value, as a user reads it in an error ("a string", "a mapping").
    pub fn kind(&self) -> &'static str {
        match &self.value {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }

    /// The value as it could be written in YAML, for error messages (`got "three"`).
    pub fn show(&self) -> String {
        match &self.value {
            Value::Null => "null".into(),
            Value::Bool(b) => b.to_string(),
            Value::Int(i) => i.to_string(),
            Value::Float(f) => f.to_string(),
            Value::Str(s) => format!("{s:?}"),
            Value::Seq(_) => "a list".into(),
            Value::Map(_) => "a mapping".into(),
        }
    }

    /// The entry `key` of a mapping node.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|(k, _)| k.name == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Turns this tree into JSON (for schema validation and printing).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map(J::Number)
                .unwrap_or(J::Null),
            Value::Str(s) => J::String(s.clone()),
            Value::Seq(items) => J::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(entries) => J::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.name.clone(), v.to_json()))
                    .collect(),
            ),
        }
    }

    /// The node at a JSON pointer path (`/services/web/deploy`), for mapping schema errors to lines.
    pub fn at_pointer(&self, pointer: &str) -> Option<&Node> {
        let mut node = self;
        for raw in pointer.split('/').skip(1) {
            let part = raw.replace("~1", "/").replace("~0", "~");
            node = match &node.value {
                Value::Map(_) => node.get(&part)?,
                Value::Seq(items) => items.get(part.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(node)
    }
}

/// A problem reading YAML text.
#[derive(Debug, Clone, PartialEq)]
pub struct YamlError {
    /// Where the parser stopped.
    pub pos: Pos,
    /// What the parser said.
    pub message: String,
}

/// Parses one YAML document. An empty document is a null node.
pub fn parse(file: &str, text: &str) -> Result<Node, YamlError> {
    let file: Arc<str> = Arc::from(file);
    if text.trim().is_empty()
        || text
            .lines()
            .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
    {
        return Ok(Node {
            pos: Pos {
                file,
                line: 1,
                col: 1,
            },
            value: Value::Null,
            interpolated: false,
        });
    }
    let mut options = serde_saphyr::Options::default();
    options.legacy_octal_numbers = true;
    options.strict_booleans = true;
    options.with_snippet = false;
    let raw: Spanned<RawValue> =
        serde_saphyr::from_str_with_options(text, options).map_err(|e| {
            let (line, col) = e
                .location()
                .map(|l| (l.line() as u32, l.column() as u32))
                .unwrap_or((0, 0));
            YamlError {
                pos: Pos {
                    file: file.clone(),
                    line,
                    col,
                },
                message: clean_message(&e.to_string()),
            }
        })?;
    Ok(raw.into_node(&file))
}

fn clean_message(msg: &str) -> String {
    // serde-saphyr prefixes the location itself; we print our own.
    let first = msg.lines().next().unwrap_or(msg).trim();
    match first.find(" at line ") {
        Some(i) => first[..i].to_string(),
        None => first.to_string(),
    }
}

enum RawValue {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<RawValue>>),
    Map(Vec<(Spanned<RawKey>, Spanned<RawValue>)>),
}

struct RawKey(String);

trait IntoNode {
    fn into_node(self, file: &Arc<str>) -> Node;
}

impl IntoNode for Spanned<RawValue> {
    fn into_node(self, file: &Arc<str>) -> Node {
        let pos = Pos {
            file: file.clone(),
            line: self.referenced.line() as u32,
            col: self.referenced.column() as u32,
        };
        let value = match self.value {
            RawValue::Null => Value::Null,
            RawValue::Bool(b) => Value::Bool(b),
            RawValue::Int(i) => Value::Int(i),
            RawValue::Float(f) => Value::Float(f),
            RawValue::Str(s) => Value::Str(s),
            RawValue::Seq(items) => {
                Value::Seq(items.into_iter().map(|i| i.into_node(file)).collect())
            }
            RawValue::Map(entries) => Value::Map(
                entries
                    .into_iter()
                    .map(|(k, v)| {
                        let kpos = Pos {
                            file: file.clone(),
                            line: k.referenced.line() as u32,
                            col: k.referenced.column() as u32,
                        };
                        (
                            Key {
                                name: k.value.0,
                                pos: kpos,
                            },
                            v.into_node(file),
                        )
                    })
                    .collect(),
            ),
        };
        Node {
            pos,
            value,
            interpolated: false,
        }
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = RawValue;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a YAML value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<RawValue, E> {
        Ok(RawValue::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<RawValue, E> {
        Ok(RawValue::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<RawValue, D::Error> {
        d.deserialize_any(RawVisitor)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<RawValue, E> {
        Ok(RawValue::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawValue, E> {
        Ok(RawValue::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawValue, E> {
        Ok(i64::try_from(v)
            .map(RawValue::Int)
            .unwrap_or(RawValue::Float(v as f64)))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<RawValue, E> {
        Ok(i64::try_from(v)
            .map(RawValue::Int)
            .unwrap_or(RawValue::Float(v as f64)))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<RawValue, E> {
        Ok(i64::try_from(v)
            .map(RawValue::Int)
            .unwrap_or(RawValue::Float(v as f64)))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<RawValue, E> {
        Ok(RawValue::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<RawValue, E> {
        Ok(RawValue::Str(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<RawValue, E> {
        Ok(RawValue::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawValue, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<RawValue>>()? {
            items.push(item);
        }
        Ok(RawValue::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawValue, A::Error> {
        let mut entries = Vec::new();
        while let Some(k) = map.next_key::<Spanned<RawKey>>()? {
            let v = map.next_value::<Spanned<RawValue>>()?;
            entries.push((k, v));
        }
        Ok(RawValue::Map(entries))
    }
}

impl<'de> Deserialize<'de> for RawValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RawVisitor)
    }
}

struct KeyVisitor;

impl Visitor<'_> for KeyVisitor {
    type Value = RawKey;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a scalar mapping key")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<RawKey, E> {
        Ok(RawKey(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<RawKey, E> {
        Ok(RawKey(v))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<RawKey, E> {
        Ok(RawKey(v.to_string()))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawKey, E> {
        Ok(RawKey(v.to_string()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawKey, E> {
        Ok(RawKey(v.to_string()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<RawKey, E> {
        Ok(RawKey(v.to_string()))
    }
    fn visit_unit<E: de::Error>(self) -> Result<RawKey, E> {
        Ok(RawKey("null".into()))
    }
}

impl<'de> Deserialize<'de> for RawKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_anchors_merge_and_octal() {
        let text = "x-base: &base\n  image: a\n  environment: {A: '1'}\nservices:\n  web:\n    <<: *base\n    image: b\n    mode: 0440\n    flag: yes\n    on: true\n";
        let n = parse("s.yml", text).unwrap();
        let web = n.get("services").unwrap().get("web").unwrap();
        assert_eq!(web.get("image").unwrap().value, Value::Str("b".into()));
        assert_eq!(web.get("mode").unwrap().value, Value::Int(288));
        assert_eq!(web.get("flag").unwrap().value, Value::Str("yes".into()));
        assert!(web.get("environment").is_some());
        let img = web.get("image").unwrap();
        assert_eq!((img.pos.line, img.pos.col), (7, 12));
        eprintln!("{:#?}", web);
    }

    #[test]
    fn syntax_error_has_line() {
        let e = parse("bad.yml", "services:\n  web:\n    image: [a\n").unwrap_err();
        assert!(e.pos.line >= 3, "{e:?}");
        eprintln!("{e:?}");
    }
}
