//! The crate's shape, checked: the module order `src/lib.rs` documents is the order imports run in, sibling
//! files never import each other in a circle (a module may use its parent and its own children), and no file
//! in `src/` grows past the size a reader can hold.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_LINES: usize = 650;

type ModPath = Vec<String>;

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every module file of the library (not `bin/`), keyed by its module path.
fn modules() -> BTreeMap<ModPath, String> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<ModPath, String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, root, out);
                continue;
            }
            if path.extension().and_then(|e| e.to_str()) != Some("rs") {
                continue;
            }
            let rel = path.strip_prefix(root).unwrap().with_extension("");
            let mut parts: ModPath = rel
                .iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect();
            if parts.first().map(String::as_str) == Some("bin") {
                continue;
            }
            if matches!(parts.last().map(String::as_str), Some("mod") | Some("lib")) {
                parts.pop();
            }
            out.insert(parts, std::fs::read_to_string(&path).unwrap());
        }
    }
    let mut out = BTreeMap::new();
    let root = src_dir();
    walk(&root, &root, &mut out);
    out
}

/// The text without `//` comments (doc comments name modules in prose).
fn code(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn ident_at(s: &[u8], mut i: usize) -> (String, usize) {
    let start = i;
    while i < s.len() && (s[i].is_ascii_alphanumeric() || s[i] == b'_') {
        i += 1;
    }
    (String::from_utf8_lossy(&s[start..i]).into_owned(), i)
}

/// Paths after `crate::` / `super::` (with `{a, b::c}` groups expanded to their first segment), resolved
/// against the module `me`.
fn references(me: &ModPath, text: &str) -> Vec<ModPath> {
    let code = code(text);
    let s = code.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < s.len() {
        let boundary =
            i == 0 || !(s[i - 1].is_ascii_alphanumeric() || s[i - 1] == b'_' || s[i - 1] == b':');
        let (base, mut j) = if boundary && s[i..].starts_with(b"crate::") {
            (Vec::new(), i + 7)
        } else if boundary && s[i..].starts_with(b"super::") {
            let mut j = i;
            let mut ups = 0;
            while s[j..].starts_with(b"super::") {
                ups += 1;
                j += 7;
            }
            (me[..me.len().saturating_sub(ups)].to_vec(), j)
        } else {
            i += 1;
            continue;
        };
        let mut path = base;
        loop {
            if j < s.len() && s[j] == b'{' {
                // a group: the first segment of each item at depth one
                let mut depth = 0;
                let mut k = j;
                let mut expect = true;
                while k < s.len() {
                    match s[k] {
                        b'{' => {
                            depth += 1;
                            expect = depth == 1;
                            k += 1;
                        }
                        b'}' => {
                            depth -= 1;
                            k += 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        b',' if depth == 1 => {
                            expect = true;
                            k += 1;
                        }
                        c if expect && depth == 1 && (c.is_ascii_alphanumeric() || c == b'_') => {
                            let (id, next) = ident_at(s, k);
                            let mut p = path.clone();
                            p.push(id);
                            out.push(p);
                            expect = false;
                            k = next;
                        }
                        _ => k += 1,
                    }
                }
                j = k;
                break;
            }
            let (id, next) = ident_at(s, j);
            if id.is_empty() {
                break;
            }
            path.push(id);
            j = next;
            if s[j..].starts_with(b"::") {
                j += 2;
            } else {
                break;
            }
        }
        if !path.is_empty() {
            out.push(path);
        }
        i = j.max(i + 1);
    }
    out
}

/// The module a path names: its longest prefix that is a module file.
fn resolve(mods: &BTreeMap<ModPath, String>, path: &ModPath) -> Option<ModPath> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|p| mods.contains_key(p))
}

fn name(p: &ModPath) -> String {
    p.join("::")
}

/// Edges between siblings: `a` uses something inside sibling `b` (both children of one parent).
fn sibling_edges(mods: &BTreeMap<ModPath, String>) -> BTreeMap<ModPath, BTreeSet<ModPath>> {
    let mut edges: BTreeMap<ModPath, BTreeSet<ModPath>> = BTreeMap::new();
    for (me, text) in mods {
        for r in references(me, text) {
            let Some(target) = resolve(mods, &r) else {
                continue;
            };
            let common = me.iter().zip(&target).take_while(|(a, b)| a == b).count();
            if common == me.len() || common == target.len() {
                continue; // itself, a parent or a child
            }
            edges
                .entry(me[..=common].to_vec())
                .or_default()
                .insert(target[..=common].to_vec());
        }
    }
    edges
}

#[test]
fn imports_follow_the_documented_module_order() {
    let mods = modules();
    let lib = &mods[&Vec::new()];
    let order: Vec<String> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("//! - [`"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_string)
        .collect();
    let top: BTreeSet<String> = mods.keys().filter_map(|p| p.first().cloned()).collect();
    for m in &top {
        assert!(
            order.contains(m),
            "src/lib.rs's layout list does not name module `{m}`"
        );
    }
    let rank = |m: &str| order.iter().position(|o| o == m);
    let mut wrong = Vec::new();
    for (me, text) in &mods {
        let Some(own) = me.first() else { continue };
        for r in references(me, text) {
            let Some(other) = r.first() else { continue };
            if other == own || !top.contains(other) {
                continue;
            }
            if rank(other) > rank(own) {
                wrong.push(format!("{} uses {} (listed below it)", name(me), name(&r)));
            }
        }
    }
    wrong.sort();
    wrong.dedup();
    assert!(
        wrong.is_empty(),
        "imports against the order of src/lib.rs:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn no_import_circle_between_sibling_files() {
    let mods = modules();
    let edges = sibling_edges(&mods);
    let reaches = |from: &ModPath, to: &ModPath| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.clone()];
        while let Some(n) = stack.pop() {
            if &n == to {
                return true;
            }
            if seen.insert(n.clone()) {
                stack.extend(edges.get(&n).into_iter().flatten().cloned());
            }
        }
        false
    };
    let mut circles = BTreeSet::new();
    for (a, targets) in &edges {
        for b in targets {
            if reaches(b, a) {
                let (x, y) = if a < b { (a, b) } else { (b, a) };
                circles.insert(format!("{} <-> {}", name(x), name(y)));
            }
        }
    }
    assert!(
        circles.is_empty(),
        "import circles between sibling files:\n{}",
        circles.into_iter().collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn no_source_file_is_too_long() {
    let mut long = Vec::new();
    for (path, text) in modules() {
        let lines = text.lines().count();
        if lines > MAX_LINES {
            long.push(format!("{} ({lines} lines)", name(&path)));
        }
    }
    assert!(
        long.is_empty(),
        "files over {MAX_LINES} lines, split them by concern:\n{}",
        long.join("\n")
    );
}

#[test]
fn the_checker_finds_a_circle_and_resolves_super() {
    let mut mods = BTreeMap::new();
    let m = |s: &str| s.split("::").map(str::to_string).collect::<ModPath>();
    mods.insert(Vec::new(), String::new());
    mods.insert(m("a"), String::new());
    mods.insert(
        m("a::x"),
        "use super::y::Thing; // crate::a::z in a comment".to_string(),
    );
    mods.insert(m("a::y"), "use crate::a::{x::Other, self};".to_string());
    mods.insert(m("a::z"), "use super::super::a::x;".to_string());
    let edges = sibling_edges(&mods);
    assert_eq!(edges[&m("a::x")], BTreeSet::from([m("a::y")]));
    assert_eq!(edges[&m("a::y")], BTreeSet::from([m("a::x")]));
    assert_eq!(edges[&m("a::z")], BTreeSet::from([m("a::x")]));
}
