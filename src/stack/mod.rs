//! Stack files: from Compose-format YAML on disk to a normalized, validated `StackFile`, and from that to the
//! cluster's desired-state specs.
//!
//! Pipeline: `yaml` (text → positioned tree) → `interpolate` (`${VAR}`) → `schema` (our JSON Schema) →
//! `decode` (typed, short syntax expanded) → `compose::Merge` (several `-c` files) → `validate` (cross references)
//! → `convert` (model specs). `load` runs the whole pipeline. Nothing here talks to the cluster.

pub mod compose;
pub mod convert;
pub mod decode;
pub mod interpolate;
pub mod load;
pub mod schema;
pub mod units;
pub mod validate;
pub mod yaml;

pub use load::{load, LoadOptions, Loaded};

use std::fmt;

use yaml::Pos;

/// One problem in a stack file, with its place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// File, line and column.
    pub pos: Pos,
    /// The key path (`services.web.deploy.replicas`); empty for the whole file.
    pub path: String,
    /// What is wrong, in a user's words.
    pub message: String,
}

impl Problem {
    /// A problem at `pos` for the key `path`.
    pub fn new(pos: &Pos, path: &str, message: String) -> Self {
        Problem {
            pos: pos.clone(),
            path: path.to_string(),
            message,
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}: {}", self.pos, self.message)
        } else {
            write!(f, "{}: {}: {}", self.pos, self.path, self.message)
        }
    }
}

/// All the problems found in a set of stack files (never empty).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct StackError {
    /// Problems in file order.
    pub problems: Vec<Problem>,
}

impl fmt::Display for StackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// Splits a command string into words like a POSIX shell would, without any expansion
/// (what docker does for `command: echo "a b"`).
pub struct ShellWords;

impl ShellWords {
    /// The words of `s`; an unterminated quote is an error.
    pub fn split(s: &str) -> Result<Vec<String>, String> {
        let mut words = Vec::new();
        let mut cur = String::new();
        let mut in_word = false;
        let mut chars = s.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\'' => {
                    in_word = true;
                    loop {
                        match chars.next() {
                            Some('\'') => break,
                            Some(x) => cur.push(x),
                            None => return Err(format!("unterminated single quote in {s:?}")),
                        }
                    }
                }
                '"' => {
                    in_word = true;
                    loop {
                        match chars.next() {
                            Some('"') => break,
                            Some('\\') => match chars.next() {
                                Some(x @ ('"' | '\\' | '$' | '`')) => cur.push(x),
                                Some('\n') => {}
                                Some(x) => {
                                    cur.push('\\');
                                    cur.push(x);
                                }
                                None => return Err(format!("unterminated double quote in {s:?}")),
                            },
                            Some(x) => cur.push(x),
                            None => return Err(format!("unterminated double quote in {s:?}")),
                        }
                    }
                }
                '\\' => {
                    in_word = true;
                    match chars.next() {
                        Some('\n') | None => {}
                        Some(x) => cur.push(x),
                    }
                }
                c if c.is_whitespace() => {
                    if in_word {
                        words.push(std::mem::take(&mut cur));
                        in_word = false;
                    }
                }
                c => {
                    in_word = true;
                    cur.push(c);
                }
            }
        }
        if in_word {
            words.push(cur);
        }
        Ok(words)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_words() {
        let cases: &[(&str, &[&str])] = &[
            (
                "bundle exec thin -p 3000",
                &["bundle", "exec", "thin", "-p", "3000"],
            ),
            ("sh -c 'echo a b'", &["sh", "-c", "echo a b"]),
            ("echo \"a \\\"b\\\"\"", &["echo", "a \"b\""]),
            ("a\\ b c", &["a b", "c"]),
            ("  spaced   out ", &["spaced", "out"]),
            ("empty ''", &["empty", ""]),
            ("--logLevel=\"DEBUG\"", &["--logLevel=DEBUG"]),
        ];
        for (input, want) in cases {
            assert_eq!(ShellWords::split(input).unwrap(), *want, "{input}");
        }
        assert!(ShellWords::split("echo 'oops").is_err());
    }
}
