//! Loads one or more stack files into one normalized `StackFile`: read, parse, interpolate, schema-check,
//! decode and merge, collecting every problem of every file before giving up.
//!
//! Must not: contact the cluster. Reading env files and `.env` happens here (the client side of a deploy).

use std::collections::{BTreeSet, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};

use super::compose::{Merge, StackFile};
use super::decode::Decoder;
use super::interpolate::{interpolate_tree, parse_dotenv};
use super::yaml::{self, Pos};
use super::{schema, validate, Problem, StackError};

/// Where variables come from.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// The environment to interpolate from; `None` = this process's environment.
    pub env: Option<HashMap<String, String>>,
    /// Skip reading `.env` beside the first file.
    pub no_dotenv: bool,
    /// The limits to check the stack against (the cluster's, when the caller knows them).
    pub limits: crate::model::Limits,
}

/// A loaded stack.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// The merged, normalized stack.
    pub stack: StackFile,
    /// Warnings for the user (ignored keys), one line each.
    pub warnings: Vec<String>,
    /// Problems docker only reports at deploy time (undeclared references, bad constraints): `stack config`
    /// prints them as warnings, `stack validate` and `stack deploy` refuse the stack.
    pub deploy_problems: Vec<Problem>,
    /// The files as read, in order: (name, text). Kept so a stack's server object can record its sources.
    pub sources: Vec<(String, String)>,
}

fn read_source(path: &Path) -> Result<(String, String, PathBuf), Problem> {
    let name = path.to_string_lossy().into_owned();
    let pos = Pos {
        file: name.as_str().into(),
        line: 0,
        col: 0,
    };
    if name == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| Problem::new(&pos, "", format!("cannot read standard input: {e}")))?;
        let dir = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
        return Ok(("-".into(), text, dir));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| Problem::new(&pos, "", format!("cannot read file: {e}")))?;
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(path))
            .unwrap_or_else(|_| path.to_path_buf())
    };
    let dir = abs
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    Ok((name, text, super::decode::normalize_path(&dir)))
}

/// Loads, merges and normalizes the files (later files override earlier ones).
pub fn load(paths: &[PathBuf], options: &LoadOptions) -> Result<Loaded, StackError> {
    if paths.is_empty() {
        return Err(StackError {
            problems: vec![Problem::new(
                &Pos::default(),
                "",
                "no stack file given (use -c FILE)".into(),
            )],
        });
    }
    let mut problems = Vec::new();
    let mut sources = Vec::new();
    let mut dirs = Vec::new();
    for p in paths {
        match read_source(p) {
            Ok((name, text, dir)) => {
                sources.push((name, text));
                dirs.push(dir);
            }
            Err(problem) => problems.push(problem),
        }
    }
    if !problems.is_empty() {
        return Err(StackError { problems });
    }

    // Variables: the process environment wins over `.env` beside the first file, as in Compose.
    let mut vars: HashMap<String, String> = HashMap::new();
    if !options.no_dotenv {
        if let Ok(text) = std::fs::read_to_string(dirs[0].join(".env")) {
            vars.extend(parse_dotenv(&text));
        }
    }
    match &options.env {
        Some(env) => vars.extend(env.clone()),
        None => vars.extend(std::env::vars()),
    }
    let lookup = |k: &str| vars.get(k).cloned();

    let mut merged: Option<StackFile> = None;
    let mut ignored = BTreeSet::new();
    for ((name, text), dir) in sources.iter().zip(&dirs) {
        let mut tree = match yaml::parse(name, text) {
            Ok(t) => t,
            Err(e) => {
                problems.push(Problem::new(
                    &e.pos,
                    "",
                    format!("invalid YAML: {}", e.message),
                ));
                continue;
            }
        };
        if matches!(tree.value, yaml::Value::Null) {
            problems.push(Problem::new(&tree.pos, "", "the file is empty".into()));
            continue;
        }
        let mut file_problems = Vec::new();
        interpolate_tree(&mut tree, "", &lookup, &mut file_problems);
        if !file_problems.is_empty() {
            problems.extend(file_problems);
            continue;
        }
        let mut decoder = Decoder::new(dir, &lookup);
        let decoded = decoder.file(&tree);
        let mut file_problems = decoder.problems;
        ignored.extend(decoder.ignored);
        // Schema findings the decoder already explained in its own words are not repeated.
        for p in schema::check(&tree) {
            let covered = file_problems.iter().any(|d| {
                d.path == p.path
                    || d.path.starts_with(&format!("{}.", p.path))
                    || d.path.starts_with(&format!("{}[", p.path))
                    || p.path.starts_with(&format!("{}.", d.path))
                    || p.path.starts_with(&format!("{}[", d.path))
            });
            if !covered {
                file_problems.push(p);
            }
        }
        file_problems.sort_by_key(|p| (p.pos.line, p.pos.col));
        problems.extend(file_problems);
        match &mut merged {
            Some(m) => m.merge_from(decoded),
            None => merged = Some(decoded),
        }
    }
    if !problems.is_empty() {
        return Err(StackError { problems });
    }
    let stack = merged.unwrap_or_default();
    let mut warnings = Vec::new();
    if !ignored.is_empty() {
        warnings.push(format!(
            "Ignoring unsupported options: {}",
            ignored.into_iter().collect::<Vec<_>>().join(", ")
        ));
    }
    let mut deploy_problems = validate::check(&stack, &options.limits);
    if let Err(e) = crate::model::limits::check_stack_files(&sources, None) {
        let pos = Pos {
            file: sources
                .first()
                .map(|(n, _)| n.as_str())
                .unwrap_or("-")
                .into(),
            line: 0,
            col: 0,
        };
        deploy_problems.push(Problem::new(&pos, "", e.to_string()));
    }
    Ok(Loaded {
        stack,
        warnings,
        deploy_problems,
        sources,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        let mut f = std::fs::File::create(&p).unwrap();
        f.write_all(text.as_bytes()).unwrap();
        p
    }

    fn env(pairs: &[(&str, &str)]) -> LoadOptions {
        LoadOptions {
            env: Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            no_dotenv: false,
            ..Default::default()
        }
    }

    #[test]
    fn two_files_merge_and_version_need_not_match() {
        let dir = tempfile::tempdir().unwrap();
        let a = write(
            dir.path(),
            "a.yml",
            "version: '3.8'\nservices:\n  web:\n    image: web:1\n    environment: [A=1, B=2]\n    deploy:\n      replicas: 2\n      update_config: {parallelism: 2, delay: 10s}\n",
        );
        let b = write(
            dir.path(),
            "b.yml",
            "version: '3.2'\nservices:\n  web:\n    image: web:2\n    environment:\n      B: three\n    deploy:\n      update_config: {delay: 1m}\n  db:\n    image: db\n",
        );
        let loaded = load(&[a, b], &env(&[])).unwrap();
        let web = &loaded.stack.services["web"];
        assert_eq!(web.image.as_deref(), Some("web:2"));
        assert_eq!(web.environment["A"].as_deref(), Some("1"));
        assert_eq!(web.environment["B"].as_deref(), Some("three"));
        let uc = web.deploy.as_ref().unwrap().update_config.as_ref().unwrap();
        assert_eq!(uc.parallelism, Some(2));
        assert_eq!(uc.delay.unwrap().0, std::time::Duration::from_secs(60));
        assert!(loaded.stack.services.contains_key("db"));
    }

    #[test]
    fn dotenv_beside_first_file_and_environment_wins() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), ".env", "TAG=fromfile\nOTHER=dot\n");
        let a = write(
            dir.path(),
            "a.yml",
            "services:\n  web:\n    image: app:${TAG}\n    hostname: $OTHER\n",
        );
        let loaded = load(std::slice::from_ref(&a), &env(&[])).unwrap();
        assert_eq!(
            loaded.stack.services["web"].image.as_deref(),
            Some("app:fromfile")
        );
        let loaded = load(&[a], &env(&[("TAG", "fromenv")])).unwrap();
        assert_eq!(
            loaded.stack.services["web"].image.as_deref(),
            Some("app:fromenv")
        );
        assert_eq!(
            loaded.stack.services["web"].hostname.as_deref(),
            Some("dot")
        );
    }

    #[test]
    fn relative_paths_resolve_against_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        write(dir.path(), "sub/app.env", "FROM_FILE=1\nOVERRIDDEN=file\n");
        let a = write(
            dir.path(),
            "sub/a.yml",
            "services:\n  web:\n    image: x\n    env_file: ./app.env\n    environment: {OVERRIDDEN: env}\n    secrets: [s]\nsecrets:\n  s:\n    file: ./s.txt\n",
        );
        let loaded = load(&[a], &env(&[])).unwrap();
        let web = &loaded.stack.services["web"];
        assert_eq!(web.environment["FROM_FILE"].as_deref(), Some("1"));
        assert_eq!(web.environment["OVERRIDDEN"].as_deref(), Some("env"));
        let file = loaded.stack.secrets["s"].file.clone().unwrap();
        assert_eq!(PathBuf::from(file), dir.path().join("sub/s.txt"));
    }

    #[test]
    fn every_problem_is_reported_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let a = write(
            dir.path(),
            "bad.yml",
            "services:\n  web:\n    image: x\n    deploy:\n      replicas: three\n      update_config:\n        paralellism: 2\n    stop_grace_period: soon\n    ports: ['99999:80']\n",
        );
        let err = load(&[a], &env(&[])).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(
                "bad.yml:5:17: services.web.deploy.replicas: expected an integer, got \"three\""
            ),
            "{text}"
        );
        assert!(text.contains("bad.yml:7:9: services.web.deploy.update_config.paralellism: unknown key `paralellism` (did you mean `parallelism`?)"), "{text}");
        assert!(
            text.contains(
                "bad.yml:8:24: services.web.stop_grace_period: invalid duration \"soon\""
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "bad.yml:9:13: services.web.ports[0]: port 99999 is out of range 1-65535"
            ),
            "{text}"
        );
        assert_eq!(err.problems.len(), 4, "{text}");
    }

    #[test]
    fn required_variable_and_bad_yaml() {
        let dir = tempfile::tempdir().unwrap();
        let a = write(
            dir.path(),
            "a.yml",
            "services:\n  web:\n    image: ${IMAGE:?set IMAGE to the image to run}\n",
        );
        let err = load(&[a], &env(&[])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "a.yml:3:12: services.web.image: required variable IMAGE is missing a value: set IMAGE to the image to run"
                .replace("a.yml", &dir.path().join("a.yml").to_string_lossy())
        );
        let b = write(dir.path(), "b.yml", "services:\n  web:\n    image: [x\n");
        let err = load(&[b], &env(&[])).unwrap_err();
        assert!(err.to_string().contains("b.yml:3:"), "{err}");
        assert!(err.to_string().contains("invalid YAML"), "{err}");
    }

    #[test]
    fn ignored_keys_warn_once() {
        let dir = tempfile::tempdir().unwrap();
        let a = write(
            dir.path(),
            "a.yml",
            "services:\n  web:\n    image: x\n    build: .\n    restart: always\n    depends_on:\n      db: {condition: service_healthy}\n  db:\n    image: y\n    depends_on: [web]\n    container_name: db\n",
        );
        let loaded = load(&[a], &env(&[])).unwrap();
        assert_eq!(
            loaded.warnings,
            vec!["Ignoring unsupported options: build, container_name, depends_on, restart"]
        );
    }

    #[test]
    fn interpolated_numbers_and_booleans() {
        let dir = tempfile::tempdir().unwrap();
        let a = write(
            dir.path(),
            "a.yml",
            "services:\n  web:\n    image: x\n    read_only: ${RO}\n    deploy:\n      replicas: ${N:-2}\n",
        );
        let loaded = load(&[a], &env(&[("RO", "true")])).unwrap();
        let web = &loaded.stack.services["web"];
        assert_eq!(web.deploy.as_ref().unwrap().replicas, Some(2));
        assert_eq!(web.read_only, Some(true));
    }
}
