//! Finds a task's program the way Docker (runc) does: `argv[0]` with a `/` is a path (relative to
//! the working directory), otherwise it is searched in the task's `PATH`; failures carry Docker's
//! wording and exit code (127 not found, 126 not executable). Also builds the task environment.
//!
//! Must not: inherit the daemon's environment into the task or execute anything.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::exec::{EXIT_NOT_EXECUTABLE, EXIT_NOT_FOUND};

/// Docker's default `PATH` when the task's environment has none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Why a program cannot be run: the exit code to report and Docker's message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LookupError {
    /// 127 when not found, 126 when not executable.
    pub code: i32,
    /// e.g. `exec: "nosuchcmd": executable file not found in $PATH`.
    pub message: String,
}

fn is_executable_file(p: &Path) -> bool {
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Resolves `argv0` using `path_var` (the task's `PATH`) and `cwd` for relative paths.
pub fn lookup_program(argv0: &str, path_var: &str, cwd: &Path) -> Result<PathBuf, LookupError> {
    if argv0.is_empty() {
        return Err(LookupError {
            code: EXIT_NOT_FOUND,
            message: "no command specified".into(),
        });
    }
    if argv0.contains('/') {
        let p = cwd.join(argv0);
        return match std::fs::metadata(&p) {
            Err(_) => Err(LookupError {
                code: EXIT_NOT_FOUND,
                message: format!("exec: \"{argv0}\": stat {argv0}: no such file or directory"),
            }),
            Ok(m) if m.is_dir() => Err(LookupError {
                code: EXIT_NOT_EXECUTABLE,
                message: format!("exec: \"{argv0}\": is a directory"),
            }),
            Ok(_) if !is_executable_file(&p) => Err(LookupError {
                code: EXIT_NOT_EXECUTABLE,
                message: format!("exec: \"{argv0}\": permission denied"),
            }),
            Ok(_) => Ok(p),
        };
    }
    for dir in path_var.split(':') {
        // An empty PATH element means the current directory.
        let dir = if dir.is_empty() {
            cwd.to_path_buf()
        } else {
            cwd.join(dir)
        };
        let candidate = dir.join(argv0);
        if is_executable_file(&candidate) {
            return Ok(candidate);
        }
    }
    Err(LookupError {
        code: EXIT_NOT_FOUND,
        message: format!("exec: \"{argv0}\": executable file not found in $PATH"),
    })
}

/// The task environment: exactly `env` (last value of a duplicated key wins, order kept), plus
/// Docker's default `PATH` when absent, plus `extra` entries that are not already set.
pub fn task_env(env: &[(String, String)], extra: &[(String, String)]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::with_capacity(env.len() + extra.len() + 1);
    for (k, v) in env {
        match out.iter_mut().find(|(ok, _)| ok == k) {
            Some(slot) => slot.1 = v.clone(),
            None => out.push((k.clone(), v.clone())),
        }
    }
    if !out.iter().any(|(k, _)| k == "PATH") {
        out.push(("PATH".into(), DEFAULT_PATH.into()));
    }
    for (k, v) in extra {
        if !out.iter().any(|(ok, _)| ok == k) {
            out.push((k.clone(), v.clone()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_programs_in_path() {
        let got = lookup_program("sh", DEFAULT_PATH, Path::new("/")).expect("sh exists");
        assert!(got.ends_with("sh"));
        assert_eq!(
            lookup_program("/bin/sh", "", Path::new("/")),
            Ok(PathBuf::from("/bin/sh"))
        );
    }

    #[test]
    fn failures_use_docker_wording() {
        let table = [
            (
                "nosuchcmd",
                DEFAULT_PATH,
                127,
                "exec: \"nosuchcmd\": executable file not found in $PATH",
            ),
            (
                "/nope/x",
                DEFAULT_PATH,
                127,
                "exec: \"/nope/x\": stat /nope/x: no such file or directory",
            ),
            (
                "/etc/passwd",
                DEFAULT_PATH,
                126,
                "exec: \"/etc/passwd\": permission denied",
            ),
            ("/etc", DEFAULT_PATH, 126, "exec: \"/etc\": is a directory"),
            (
                "sh",
                "/nonexistent",
                127,
                "exec: \"sh\": executable file not found in $PATH",
            ),
        ];
        for (argv0, path, code, message) in table {
            let err = lookup_program(argv0, path, Path::new("/")).expect_err(argv0);
            assert_eq!((err.code, err.message.as_str()), (code, message));
        }
    }

    #[test]
    fn env_is_exact_plus_defaults() {
        let env = vec![
            ("A".to_string(), "1".to_string()),
            ("A".to_string(), "2".to_string()),
        ];
        let extra = vec![
            ("X".to_string(), "x".to_string()),
            ("A".to_string(), "no".to_string()),
        ];
        let got = task_env(&env, &extra);
        let want: Vec<(String, String)> = [("A", "2"), ("PATH", DEFAULT_PATH), ("X", "x")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(got, want);
    }
}
