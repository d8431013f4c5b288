//! `swarmctl stack config` / `stack validate` on the example stacks and on broken fixtures, as a user runs them.

use std::path::{Path, PathBuf};

use assert_cmd::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn swarmctl() -> Command {
    let mut cmd = Command::cargo_bin("swarmctl").expect("swarmctl is built");
    cmd.env_remove("SWARM_HOST");
    cmd
}

fn examples() -> Vec<Vec<PathBuf>> {
    let dir = root().join("examples/stacks");
    let mut out: Vec<Vec<PathBuf>> = std::fs::read_dir(&dir)
        .expect("examples/stacks exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yml"))
        .map(|p| vec![p])
        .collect();
    out.sort();
    out.push(vec![
        dir.join("layered/base.yml"),
        dir.join("layered/prod.yml"),
    ]);
    out
}

fn file_args(files: &[PathBuf]) -> Vec<String> {
    files
        .iter()
        .flat_map(|f| ["-c".to_string(), f.display().to_string()])
        .collect()
}

#[test]
fn every_example_validates_and_prints_normalized_json() {
    let examples = examples();
    assert!(
        examples.len() >= 6,
        "at least 5 example stacks plus the layered one"
    );
    for files in examples {
        let out = swarmctl()
            .args(["stack", "validate"])
            .args(file_args(&files))
            .arg("demo")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{files:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );

        let out = swarmctl()
            .args(["stack", "config", "--format", "json"])
            .args(file_args(&files))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{files:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json: serde_json::Value =
            serde_json::from_slice(&out.stdout).expect("stack config prints JSON");
        let services = json["services"].as_object().expect("services");
        assert!(!services.is_empty());
        for (name, svc) in services {
            // the examples run on the process executor: every service names its command
            assert!(
                svc.get("command").is_some() || svc.get("entrypoint").is_some(),
                "{files:?}: service {name} has no command"
            );
            assert!(svc["image"].is_string(), "{name} has an image");
        }
        // short syntaxes come out long: no port or secret is a bare string
        for svc in services.values() {
            for key in ["ports", "secrets", "configs", "volumes"] {
                if let Some(items) = svc.get(key).and_then(|v| v.as_array()) {
                    assert!(
                        items.iter().all(|i| i.is_object()),
                        "{key} normalized: {items:?}"
                    );
                }
            }
            if let Some(env) = svc.get("environment") {
                assert!(env.is_object(), "environment is a map");
            }
        }
    }
}

#[test]
fn layered_example_merges_files_and_reads_dotenv() {
    let dir = root().join("examples/stacks/layered");
    let out = swarmctl()
        .current_dir(&dir)
        .env_remove("TAG")
        .env_remove("REGISTRY")
        .args([
            "stack", "config", "--format", "json", "-c", "base.yml", "-c", "prod.yml",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Ignoring unsupported options: depends_on"),
        "{stderr}"
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let api = &json["services"]["api"];
    assert_eq!(api["image"], "registry.example.com/shop:1.4.2");
    assert_eq!(api["environment"]["SHOP_ENV"], "production");
    assert_eq!(api["environment"]["PRICE_SYMBOL"], "$");
    assert_eq!(api["deploy"]["replicas"], 6);
    assert_eq!(api["deploy"]["update_config"]["delay"], "10s");
    assert_eq!(api["deploy"]["update_config"]["parallelism"], 2);
    assert_eq!(api["deploy"]["update_config"]["order"], "start-first");
    let front = &json["services"]["frontend"];
    assert_eq!(
        front["deploy"]["resources"]["limits"]["memory"],
        "134217728"
    );
    assert_eq!(front["command"], serde_json::json!(["sleep", "3600"]));

    // the environment wins over .env
    let out = swarmctl()
        .current_dir(&dir)
        .env("TAG", "2.0.0")
        .args([
            "stack", "config", "--format", "json", "-c", "base.yml", "-c", "prod.yml",
        ])
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        json["services"]["api"]["image"],
        "registry.example.com/shop:2.0.0"
    );
}

fn expectations(path: &Path, prefix: &str) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    let name = path.file_name().unwrap().to_string_lossy().to_string();
    text.lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .map(|l| l.trim().replacen(&name, &path.display().to_string(), 1))
        .collect()
}

#[test]
fn broken_files_name_file_line_and_key_and_exit_nonzero() {
    let dir = root().join("tests/fixtures/bad");
    let mut fixtures: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    fixtures.sort();
    assert!(fixtures.len() >= 6);
    for f in fixtures {
        let config = swarmctl()
            .env_remove("SWARM_TEST_SURELY_UNSET")
            .args(["stack", "config", "-c"])
            .arg(&f)
            .output()
            .unwrap();
        let validate = swarmctl()
            .args(["stack", "validate", "-c"])
            .arg(&f)
            .output()
            .unwrap();
        let config_err = String::from_utf8_lossy(&config.stderr);
        let validate_err = String::from_utf8_lossy(&validate.stderr);
        let expect = expectations(&f, "# expect:");
        let expect_validate = expectations(&f, "# validate:");
        assert!(!validate.status.success(), "{f:?} must fail validation");
        assert!(!validate_err.contains("panicked"), "{validate_err}");
        if !expect.is_empty() {
            assert_eq!(config.status.code(), Some(1), "{f:?}: {config_err}");
            let errors = config_err
                .lines()
                .filter(|l| l.starts_with("error: "))
                .count();
            assert_eq!(
                errors,
                expect.iter().filter(|e| e.contains(".yml:")).count().max(1),
                "{f:?}: {config_err}"
            );
        } else {
            assert!(config.status.success(), "{f:?}: {config_err}");
        }
        for e in &expect {
            assert!(
                config_err.contains(e.as_str()),
                "{f:?}: missing {e:?} in:\n{config_err}"
            );
        }
        for e in &expect_validate {
            assert!(
                validate_err.contains(e.as_str()),
                "{f:?}: missing {e:?} in:\n{validate_err}"
            );
            assert!(
                config_err.contains(e.as_str()),
                "stack config warns too: {e:?} in:\n{config_err}"
            );
        }
    }
}

#[test]
fn config_reads_standard_input_and_yaml_output_reparses() {
    let yaml =
        "services:\n  a:\n    image: busybox\n    command: echo hi\n    ports: ['8080:80']\n";
    let out = swarmctl()
        .args(["stack", "config", "-c", "-"])
        .write_stdin(yaml)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("published: 8080"), "{text}");
    // our own YAML output is a valid stack file again, and normalizing it twice changes nothing
    let again = swarmctl()
        .args(["stack", "config", "-c", "-"])
        .write_stdin(text.clone())
        .output()
        .unwrap();
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(String::from_utf8(again.stdout).unwrap(), text);
}

#[test]
fn missing_file_is_a_clear_error() {
    let out = swarmctl()
        .args(["stack", "config", "-c", "/nonexistent/stack.yml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent/stack.yml: cannot read file"),
        "{err}"
    );
}

#[test]
fn output_into_a_closed_pipe_ends_quietly_without_a_panic() {
    // `swarmctl stack config -c web.yml | head -c0`: the reader is gone before swarmctl writes
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_swarmctl"))
        .args(["stack", "config", "-c"])
        .arg(root().join("examples/stacks/web.yml"))
        .env_remove("SWARM_HOST")
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("swarmctl runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "swarmctl panicked: {stderr}");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        out.status.signal(),
        Some(13),
        "ended by SIGPIPE like other tools: {:?} {stderr}",
        out.status
    );
}
