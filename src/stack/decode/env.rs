//! Env files (`env_file:`): read through an injected `ReadFile`, the way variable lookup is injected for
//! interpolation, so tests can decode with in-memory files. `Decoder::new` reads the real file system.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use super::Decoder;
use crate::stack::yaml::{Node, Value};

/// How the decoder reads the files a stack file names (env files): a path → its text.
pub type ReadFile<'a> = &'a dyn Fn(&Path) -> io::Result<String>;

/// The default `ReadFile`: the real file system.
pub fn read_real_file(path: &Path) -> io::Result<String> {
    std::fs::read_to_string(path)
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

impl Decoder<'_> {
    /// Reads the env files `files` (as written under `node`, relative to the stack file's folder) into `env`;
    /// a bare `KEY` takes its value from the lookup. A file that cannot be read is a problem at its place.
    pub(super) fn env_files(
        &mut self,
        node: &Node,
        path: &str,
        files: &[String],
        env: &mut BTreeMap<String, Option<String>>,
    ) {
        let resolved: Vec<String> = files.iter().map(|f| self.resolve_path(f)).collect();
        for (i, file) in resolved.iter().enumerate() {
            match (self.read)(Path::new(file)) {
                Ok(text) => {
                    for (k, v) in parse_env_file(&text) {
                        let v = v.or_else(|| (self.lookup)(&k));
                        env.insert(k, v);
                    }
                }
                Err(e) => {
                    let pos = match &node.value {
                        Value::Seq(items) => items
                            .get(i)
                            .map(|x| x.pos.clone())
                            .unwrap_or(node.pos.clone()),
                        _ => node.pos.clone(),
                    };
                    self.err(&pos, path, format!("cannot read env file {file}: {e}"));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::PathBuf;

    use super::*;
    use crate::stack::yaml;

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
    fn env_files_come_from_the_injected_reader() {
        let files: HashMap<PathBuf, &str> = HashMap::from([
            (PathBuf::from("/stack/a.env"), "A=1\nB=from-a\nPASS\n"),
            (PathBuf::from("/stack/conf/b.env"), "B=from-b\n"),
        ]);
        let read = |p: &Path| {
            files
                .get(p)
                .map(|s| s.to_string())
                .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such file"))
        };
        let lookup = |k: &str| (k == "PASS").then(|| "passed".to_string());
        let text = "services:\n  web:\n    image: nginx\n    env_file: [a.env, ./conf/b.env, missing.env]\n    environment:\n      C: \"3\"\n";
        let tree = yaml::parse("stack.yml", text).unwrap();
        let mut decoder = Decoder::new(Path::new("/stack"), &lookup).with_reader(&read);
        let stack = decoder.file(&tree);
        let web = &stack.services["web"];
        assert_eq!(
            web.environment,
            BTreeMap::from([
                ("A".to_string(), Some("1".to_string())),
                ("B".to_string(), Some("from-b".to_string())),
                ("C".to_string(), Some("3".to_string())),
                ("PASS".to_string(), Some("passed".to_string())),
            ])
        );
        assert_eq!(web.env_file, ["a.env", "./conf/b.env", "missing.env"]);
        assert_eq!(decoder.problems.len(), 1, "{:?}", decoder.problems);
        let problem = &decoder.problems[0];
        assert_eq!(problem.path, "services.web.env_file");
        assert_eq!(problem.pos.line, 4);
        assert!(
            problem
                .message
                .starts_with("cannot read env file /stack/missing.env: "),
            "{}",
            problem.message
        );
    }
}
