//! Variable interpolation in stack files, as docker and Compose do it.
//!
//! Owns: `$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?message}`, `${VAR?message}`,
//! `${VAR:+alt}`, `${VAR+alt}`, `$$` for a literal `$`, applied to every string value of a parsed tree (keys are
//! left alone), and reading `.env` files. Must not: read the process environment itself (a lookup is passed in).

use super::yaml::{Node, Value};
use super::Problem;

/// Why a string could not be interpolated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InterpolateError {
    /// `${VAR:?message}` or `${VAR?message}` with the variable unset (or empty for `:?`).
    Required {
        /// The variable.
        var: String,
        /// The message the file gives.
        message: String,
    },
    /// A `$` that starts no valid substitution.
    Invalid {
        /// The whole string, for the error.
        text: String,
    },
}

impl std::fmt::Display for InterpolateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InterpolateError::Required { var, message } if message.is_empty() => {
                write!(f, "required variable {var} is missing a value")
            }
            InterpolateError::Required { var, message } => {
                write!(f, "required variable {var} is missing a value: {message}")
            }
            InterpolateError::Invalid { text } => write!(
                f,
                "invalid interpolation format in {text:?}: you may need to escape any $ with another $"
            ),
        }
    }
}

fn is_name_start(c: char) -> bool {
    c == '_' || c.is_ascii_alphabetic()
}

fn is_name_char(c: char) -> bool {
    c == '_' || c.is_ascii_alphanumeric()
}

/// Interpolates one string. Returns the new text and whether any variable was substituted.
pub fn interpolate(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(String, bool), InterpolateError> {
    interpolate_with(text, lookup, true)
}

/// `strict` (top level): every `$` form is substituted and a `$` that starts none is an error. Not strict (inside
/// a default or alternative): only nested `${...}` is substituted (as Compose does) and any other `$` is kept as
/// written, as docker keeps `${PASSWORD:-$2y$05$hash}`.
fn interpolate_with(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    strict: bool,
) -> Result<(String, bool), InterpolateError> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut substituted = false;
    let mut i = 0;
    let invalid = || InterpolateError::Invalid {
        text: text.to_string(),
    };
    while i < chars.len() {
        let c = chars[i];
        if c != '$' {
            out.push(c);
            i += 1;
            continue;
        }
        match chars.get(i + 1) {
            Some(&n) if !strict && n != '{' => {
                // inside a default only `${...}` is substituted; `$x` and `$$` stay as written, like docker
                out.push('$');
                i += 1;
            }
            Some('$') => {
                out.push('$');
                i += 2;
            }
            Some(&n) if is_name_start(n) => {
                let start = i + 1;
                let mut end = start;
                while end < chars.len() && is_name_char(chars[end]) {
                    end += 1;
                }
                let name: String = chars[start..end].iter().collect();
                out.push_str(&lookup(&name).unwrap_or_default());
                substituted = true;
                i = end;
            }
            Some('{') => {
                // find the matching close brace, allowing nested ${...} in the default part
                let mut depth = 0usize;
                let mut j = i + 1;
                let mut close = None;
                while j < chars.len() {
                    match chars[j] {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                close = Some(j);
                                break;
                            }
                        }
                        _ => {}
                    }
                    j += 1;
                }
                let Some(close) = close else {
                    if strict {
                        return Err(invalid());
                    }
                    out.extend(&chars[i..]);
                    break;
                };
                let inner: String = chars[i + 2..close].iter().collect();
                out.push_str(&braced(&inner, lookup).ok_or_else(invalid)??);
                substituted = true;
                i = close + 1;
            }
            _ if strict => return Err(invalid()),
            _ => {
                out.push('$');
                i += 1;
            }
        }
    }
    Ok((out, substituted))
}

/// `inner` is the text between `${` and `}`. None = malformed.
fn braced(
    inner: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Option<Result<String, InterpolateError>> {
    let name_end = inner
        .find(|c: char| !is_name_char(c))
        .unwrap_or(inner.len());
    let name = &inner[..name_end];
    if name.is_empty() || !name.starts_with(is_name_start) {
        return None;
    }
    let rest = &inner[name_end..];
    let value = lookup(name);
    let nested = |text: &str| interpolate_with(text, lookup, false).map(|(s, _)| s);
    let result = if rest.is_empty() {
        Ok(value.unwrap_or_default())
    } else if let Some(default) = rest.strip_prefix(":-") {
        match value {
            Some(v) if !v.is_empty() => Ok(v),
            _ => nested(default),
        }
    } else if let Some(default) = rest.strip_prefix('-') {
        match value {
            Some(v) => Ok(v),
            None => nested(default),
        }
    } else if let Some(message) = rest.strip_prefix(":?") {
        match value {
            Some(v) if !v.is_empty() => Ok(v),
            _ => Err(InterpolateError::Required {
                var: name.to_string(),
                message: message.to_string(),
            }),
        }
    } else if let Some(message) = rest.strip_prefix('?') {
        match value {
            Some(v) => Ok(v),
            None => Err(InterpolateError::Required {
                var: name.to_string(),
                message: message.to_string(),
            }),
        }
    } else if let Some(alt) = rest.strip_prefix(":+") {
        match value {
            Some(v) if !v.is_empty() => nested(alt),
            _ => Ok(String::new()),
        }
    } else if let Some(alt) = rest.strip_prefix('+') {
        match value {
            Some(_) => nested(alt),
            None => Ok(String::new()),
        }
    } else {
        return None;
    };
    Some(result)
}

/// Interpolates every string value of `node` in place (keys are not touched; `x-` extension subtrees are
/// skipped, like docker does not interpolate what it drops). Problems are collected, not returned early.
pub fn interpolate_tree(
    node: &mut Node,
    path: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<Problem>,
) {
    match &mut node.value {
        Value::Str(s) => match interpolate(s, lookup) {
            Ok((new, substituted)) => {
                if substituted {
                    node.interpolated = true;
                }
                *s = new;
            }
            Err(e) => problems.push(Problem::new(&node.pos, path, e.to_string())),
        },
        Value::Seq(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                interpolate_tree(item, &format!("{path}[{i}]"), lookup, problems);
            }
        }
        Value::Map(entries) => {
            for (k, v) in entries.iter_mut() {
                if k.name.starts_with("x-") {
                    continue;
                }
                let sub = if path.is_empty() {
                    k.name.clone()
                } else {
                    format!("{path}.{}", k.name)
                };
                interpolate_tree(v, &sub, lookup, problems);
            }
        }
        _ => {}
    }
}

/// Parses a `.env` file: `KEY=VALUE` lines, `#` comments, optional `export `, values optionally quoted.
pub fn parse_dotenv(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim().to_string();
        let value = value.trim();
        let value = if value.len() >= 2
            && ((value.starts_with('"') && value.ends_with('"'))
                || (value.starts_with('\'') && value.ends_with('\'')))
        {
            let inner = &value[1..value.len() - 1];
            if value.starts_with('"') {
                inner
                    .replace("\\n", "\n")
                    .replace("\\\"", "\"")
                    .replace("\\\\", "\\")
            } else {
                inner.to_string()
            }
        } else {
            // an unquoted value ends at " #" (an inline comment)
            match value.find(" #") {
                Some(i) => value[..i].trim_end().to_string(),
                None => value.to_string(),
            }
        };
        out.push((key, value));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn env() -> HashMap<String, String> {
        HashMap::from([
            ("A".to_string(), "alpha".to_string()),
            ("EMPTY".to_string(), String::new()),
            ("N".to_string(), "3".to_string()),
        ])
    }

    fn run(s: &str) -> Result<String, InterpolateError> {
        let e = env();
        interpolate(s, &|k| e.get(k).cloned()).map(|(s, _)| s)
    }

    #[test]
    fn forms() {
        let cases = [
            ("$A", "alpha"),
            ("${A}", "alpha"),
            ("x${A}y", "xalphay"),
            ("$A-b", "alpha-b"),
            ("${UNSET}", ""),
            ("${UNSET:-def}", "def"),
            ("${EMPTY:-def}", "def"),
            ("${EMPTY-def}", ""),
            ("${UNSET-def}", "def"),
            ("${A:-def}", "alpha"),
            ("$$A", "$A"),
            ("$${A}", "${A}"),
            ("a $$ b", "a $ b"),
            ("${UNSET:-${A}}", "alpha"),
            ("${UNSET:-x-${N}}", "x-3"),
            ("${A:+set}", "set"),
            ("${EMPTY:+set}", ""),
            ("${EMPTY+set}", "set"),
            ("${A?msg}", "alpha"),
            ("${UNSET:-$2y$05$hash}", "$2y$05$hash"),
            ("${UNSET:-a:${A}}", "a:alpha"),
            ("${UNSET:-$$A}", "$$A"),
            ("${UNSET:-$A}", "$A"),
            ("${EMPTY?msg}", ""),
            ("no vars", "no vars"),
            ("{{.Service.Name}}", "{{.Service.Name}}"),
        ];
        for (input, want) in cases {
            assert_eq!(run(input).unwrap(), want, "{input}");
        }
    }

    #[test]
    fn errors() {
        assert_eq!(
            run("${UNSET:?please set it}").unwrap_err().to_string(),
            "required variable UNSET is missing a value: please set it"
        );
        assert!(matches!(
            run("${EMPTY:?x}"),
            Err(InterpolateError::Required { .. })
        ));
        assert!(matches!(
            run("${UNSET?x}"),
            Err(InterpolateError::Required { .. })
        ));
        for bad in ["${", "${A", "${}", "$1", "${A:x}", "trailing $", "${-x}"] {
            assert!(
                matches!(run(bad), Err(InterpolateError::Invalid { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn dotenv() {
        let vars = parse_dotenv("# comment\nA=1\nexport B = two\nC=\"quoted # not comment\"\nD='single'\nE=x # comment\n\nbad line\n");
        assert_eq!(
            vars,
            vec![
                ("A".into(), "1".into()),
                ("B".into(), "two".into()),
                ("C".into(), "quoted # not comment".into()),
                ("D".into(), "single".into()),
                ("E".into(), "x".into()),
            ]
        );
    }

    proptest! {
        /// Escaping every `$` as `$$` always gives back the original text, whatever the environment.
        #[test]
        fn escaped_text_round_trips(s in "\\PC*") {
            let escaped = s.replace('$', "$$");
            let (out, substituted) = interpolate(&escaped, &|_| Some("X".into())).unwrap();
            prop_assert_eq!(out, s);
            prop_assert!(!substituted);
        }

        /// Text without `$` is never changed.
        #[test]
        fn dollar_free_text_is_unchanged(s in "[^$]*") {
            prop_assert_eq!(interpolate(&s, &|_| None).unwrap().0, s);
        }

        /// A set variable is substituted in every form that reads it.
        #[test]
        fn set_variable_substitutes(name in "[A-Z_][A-Z0-9_]{0,8}", value in "[a-z0-9]{1,8}") {
            let lookup = |k: &str| (k == name).then(|| value.clone());
            for form in [format!("${{{name}}}"), format!("${{{name}:-d}}"), format!("${{{name}-d}}"), format!("${{{name}:?m}}")] {
                prop_assert_eq!(interpolate(&form, &lookup).unwrap().0, value.clone());
            }
        }
    }
}
