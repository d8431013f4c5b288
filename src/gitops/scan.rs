//! What a watched directory holds: each `NAME.yml` / `NAME.yaml` file, or each folder `NAME/` with a
//! `stack.yml` (`stack.yaml`), an optional `stack.override.yml` and `.env`, is the stack NAME. Loading an entry
//! gives the deploy request and the revision of its content (`sha256:` over its files).
//!
//! Must not: talk to the cluster. Hidden files and folders (`.git`) are not stacks.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::api::{control, to_json};
use crate::model::Limits;
use crate::stack::{self, LoadOptions};

/// One stack of a watched directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The stack name (the file's stem or the folder's name).
    pub name: String,
    /// The file or folder, relative to the watched directory (`web.yml`, `api/`).
    pub path: String,
    /// The stack files, in merge order.
    pub files: Vec<PathBuf>,
    /// Other files whose content counts (the folder's `.env`).
    pub extra: Vec<PathBuf>,
    /// Why this entry cannot be a stack (a name used twice, an invalid name); None when it can.
    pub problem: Option<String>,
}

impl Entry {
    /// Whether this entry is a folder stack (its `.env` is read).
    pub fn is_folder(&self) -> bool {
        self.path.ends_with('/')
    }
}

/// A loaded entry: the deploy request and its revision.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// The deploy request (spec and files), without dry-run or source.
    pub request: control::DeployStackRequest,
    /// Warnings (ignored keys), one a line.
    pub warnings: Vec<String>,
}

fn stack_file_in(dir: &Path, stem: &str) -> Option<PathBuf> {
    ["yml", "yaml"]
        .iter()
        .map(|ext| dir.join(format!("{stem}.{ext}")))
        .find(|p| p.is_file())
}

/// The stack a path inside the watched directory belongs to (`web.yml` → web, `api/.env` → api); None for
/// anything else.
pub fn stack_of(dir: &Path, path: &Path) -> Option<String> {
    let rel = path.strip_prefix(dir).ok()?;
    let mut parts = rel.components();
    let first = parts.next()?.as_os_str().to_str()?;
    if first.starts_with('.') {
        return None;
    }
    if parts.next().is_some() {
        return Some(first.to_string());
    }
    let stem = first
        .strip_suffix(".yml")
        .or_else(|| first.strip_suffix(".yaml"))?;
    Some(stem.to_string())
}

/// The entries of `dir`, sorted by name; two entries with one name both carry a problem.
pub fn scan(dir: &Path) -> Result<Vec<Entry>, String> {
    let read = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut by_name: BTreeMap<String, Vec<Entry>> = BTreeMap::new();
    for item in read {
        let item = item.map_err(|e| format!("{}: {e}", dir.display()))?;
        let path = item.path();
        let Some(file_name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_string)
        else {
            continue;
        };
        if file_name.starts_with('.') {
            continue;
        }
        let entry = if path.is_dir() {
            let Some(main) = stack_file_in(&path, "stack") else {
                continue;
            };
            let mut files = vec![main];
            files.extend(stack_file_in(&path, "stack.override"));
            let env = path.join(".env");
            Entry {
                name: file_name.clone(),
                path: format!("{file_name}/"),
                files,
                extra: if env.is_file() { vec![env] } else { vec![] },
                problem: None,
            }
        } else {
            let Some(stem) = file_name
                .strip_suffix(".yml")
                .or_else(|| file_name.strip_suffix(".yaml"))
            else {
                continue;
            };
            Entry {
                name: stem.to_string(),
                path: file_name.clone(),
                files: vec![path.clone()],
                extra: vec![],
                problem: None,
            }
        };
        by_name.entry(entry.name.clone()).or_default().push(entry);
    }
    let mut out = Vec::new();
    for (name, mut entries) in by_name {
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        let paths: Vec<String> = entries.iter().map(|e| e.path.clone()).collect();
        for mut e in entries {
            if paths.len() > 1 {
                e.problem = Some(format!(
                    "{}: stack {name} is defined more than once ({}): rename all but one",
                    dir.join(&e.path).display(),
                    paths.join(", ")
                ));
            } else if let Err(m) = stack::convert::check_stack_name(&name) {
                e.problem = Some(format!("{}: {m}", dir.join(&e.path).display()));
            }
            out.push(e);
        }
    }
    Ok(out)
}

/// `sha256:` + the hash of the entry's files (names and contents); an unreadable file is an error.
pub fn content_revision(entry: &Entry) -> Result<String, String> {
    let mut h = Sha256::new();
    for p in entry.files.iter().chain(&entry.extra) {
        let data =
            std::fs::read(p).map_err(|e| format!("{}: cannot read file: {e}", p.display()))?;
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default();
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update((data.len() as u64).to_le_bytes());
        h.update(&data);
    }
    Ok(format!("sha256:{}", hex::encode(h.finalize())))
}

/// Loads and converts an entry (as `stack deploy` would), checked against `limits`; else every problem
/// (`file:line:col: key.path: message`), one a line.
pub fn load(entry: &Entry, limits: &Limits) -> Result<Loaded, Vec<String>> {
    if let Some(p) = &entry.problem {
        return Err(vec![p.clone()]);
    }
    let options = LoadOptions {
        limits: limits.clone(),
        // a flat file's directory is the watched one: its `.env` belongs to no stack
        no_dotenv: !entry.is_folder(),
        ..LoadOptions::default()
    };
    let loaded = stack::load(&entry.files, &options)
        .map_err(|e| e.problems.iter().map(|p| p.to_string()).collect::<Vec<_>>())?;
    let spec = stack::convert::convert_within(&entry.name, &loaded.stack, limits)
        .map_err(|e| e.problems.iter().map(|p| p.to_string()).collect::<Vec<_>>())?;
    Ok(Loaded {
        request: control::DeployStackRequest {
            spec_json: to_json(&spec),
            files: loaded
                .sources
                .iter()
                .map(|(name, text)| control::StackFile {
                    name: name.clone(),
                    text: text.clone(),
                })
                .collect(),
            prune: true,
            dry_run: true,
            source_json: String::new(),
        },
        warnings: loaded.warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_and_folders_are_stacks_named_after_them() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("web.yml"), "services: {}\n").unwrap();
        std::fs::write(d.join("notes.txt"), "x").unwrap();
        std::fs::write(d.join(".hidden.yml"), "x").unwrap();
        std::fs::create_dir(d.join("api")).unwrap();
        std::fs::write(d.join("api/stack.yml"), "services: {}\n").unwrap();
        std::fs::write(d.join("api/stack.override.yml"), "services: {}\n").unwrap();
        std::fs::write(d.join("api/.env"), "A=1\n").unwrap();
        std::fs::create_dir(d.join("empty")).unwrap();
        std::fs::write(d.join("dup.yml"), "").unwrap();
        std::fs::write(d.join("dup.yaml"), "").unwrap();
        let entries = scan(d).unwrap();
        let names: Vec<(&str, &str, bool)> = entries
            .iter()
            .map(|e| (e.name.as_str(), e.path.as_str(), e.problem.is_some()))
            .collect();
        assert_eq!(
            names,
            vec![
                ("api", "api/", false),
                ("dup", "dup.yaml", true),
                ("dup", "dup.yml", true),
                ("web", "web.yml", false)
            ]
        );
        assert_eq!(entries[0].files.len(), 2);
        assert_eq!(entries[0].extra, vec![d.join("api/.env")]);
        assert!(entries[1]
            .problem
            .as_ref()
            .unwrap()
            .contains("more than once"));

        assert_eq!(stack_of(d, &d.join("api/.env")).as_deref(), Some("api"));
        assert_eq!(stack_of(d, &d.join("web.yml")).as_deref(), Some("web"));
        assert_eq!(stack_of(d, &d.join("notes.txt")), None);
        assert_eq!(stack_of(d, &d.join(".git/HEAD")), None);

        // the revision follows the content, the .env included
        let r1 = content_revision(&entries[0]).unwrap();
        std::fs::write(d.join("api/.env"), "A=2\n").unwrap();
        assert_ne!(content_revision(&entries[0]).unwrap(), r1);
    }

    #[test]
    fn a_broken_file_is_reported_with_file_line_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("web.yml");
        std::fs::write(
            &f,
            "services:\n  web:\n    image: busybox\n    deploy:\n      replicas: lots\n",
        )
        .unwrap();
        let entries = scan(dir.path()).unwrap();
        let problems = load(&entries[0], &Limits::default()).unwrap_err();
        let text = problems.join("\n");
        assert!(text.contains("web.yml:5"), "{text}");
        assert!(text.contains("services.web.deploy.replicas"), "{text}");
    }
}
