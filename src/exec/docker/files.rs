//! Host-side files of one container task: `<root>/<task_id>/secrets` (a tmpfs mount when root,
//! else `/dev/shm/swarm-docker-<uid>/<task_id>`: never persistent disk) and
//! `<root>/<task_id>/configs`, one file per secret/config, each bind-mounted read-only into the
//! container at its target.
//!
//! Must not: keep secret data anywhere but tmpfs, or follow targets out of the container's view
//! (`..`).

use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use crate::exec::{ExecError, FileMount};

pub(crate) use crate::exec::files::FileKind;
use crate::exec::files::{io_err, mount_tmpfs, unmount_all, write_file};

/// The absolute path of a secret or config inside the container: relative secret targets live
/// in `/run/secrets/`, relative config targets in `/` (Docker's defaults).
pub(crate) fn container_target(target: &str, kind: FileKind) -> Result<String, String> {
    let base = match kind {
        FileKind::Secret => "/run/secrets",
        FileKind::Config => "/",
    };
    let joined = Path::new(base).join(target);
    let mut out = PathBuf::from("/");
    for c in joined.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(format!("target {target:?} must not contain '..'"));
            }
        }
    }
    if out == Path::new("/") || out == Path::new("/run/secrets") {
        return Err(format!("target {target:?} names no file"));
    }
    Ok(out.display().to_string())
}

fn task_id_ok(task_id: &str) -> bool {
    !task_id.is_empty()
        && task_id.len() <= 128
        && task_id != "."
        && task_id != ".."
        && task_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// The host directories of one task.
#[derive(Clone, Debug)]
pub(crate) struct TaskFiles {
    dir: PathBuf,
    secrets: PathBuf,
    is_root: bool,
}

impl TaskFiles {
    /// Paths for `task_id` under `root`, refusing ids that could escape it.
    pub(crate) fn new(root: &Path, task_id: &str, is_root: bool) -> Result<Self, ExecError> {
        if !task_id_ok(task_id) {
            return Err(ExecError::InvalidSpec {
                task: task_id.to_string(),
                message: "task id must be 1-128 characters of [A-Za-z0-9._-]".into(),
            });
        }
        let dir = root.join(task_id);
        let secrets = if is_root {
            dir.join("secrets")
        } else {
            PathBuf::from("/dev/shm")
                .join(format!("swarm-docker-{}", nix::unistd::geteuid()))
                .join(task_id)
        };
        Ok(TaskFiles {
            dir,
            secrets,
            is_root,
        })
    }

    fn configs(&self) -> PathBuf {
        self.dir.join("configs")
    }

    /// Creates the secrets tmpfs (when there are secrets) and writes every file; returns the
    /// binds `host:container:ro` for the container. Idempotent.
    pub(crate) fn write(
        &self,
        secrets: &[FileMount],
        configs: &[FileMount],
    ) -> Result<Vec<String>, ExecError> {
        let mut binds = Vec::new();
        if !secrets.is_empty() {
            self.setup_secrets_dir()?;
            binds.extend(self.write_files(&self.secrets, secrets, FileKind::Secret)?);
        }
        if !configs.is_empty() {
            binds.extend(self.write_files(&self.configs(), configs, FileKind::Config)?);
        }
        Ok(binds)
    }

    fn setup_secrets_dir(&self) -> Result<(), ExecError> {
        let s = &self.secrets;
        if self.is_root {
            return mount_tmpfs(s);
        }
        fs::create_dir_all(s).map_err(io_err(format!("creating {}", s.display())))
    }

    fn write_files(
        &self,
        base: &Path,
        files: &[FileMount],
        kind: FileKind,
    ) -> Result<Vec<String>, ExecError> {
        fs::create_dir_all(base).map_err(io_err(format!("creating {}", base.display())))?;
        let mut binds = Vec::new();
        for (i, f) in files.iter().enumerate() {
            let target =
                container_target(&f.target, kind).map_err(|message| ExecError::InvalidSpec {
                    task: base.display().to_string(),
                    message,
                })?;
            let path = base.join(i.to_string());
            write_file(&path, f, self.is_root)?;
            binds.push(format!("{}:{target}:ro", path.display()));
        }
        Ok(binds)
    }

    /// Removes everything: unmounts the secrets tmpfs, deletes the directories. Idempotent.
    pub(crate) fn remove(&self) -> Result<(), ExecError> {
        unmount_all(&self.secrets)?;
        for d in [&self.secrets, &self.dir] {
            match fs::remove_dir_all(d) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(ExecError::io(format!("removing {}", d.display()), e)),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_land_where_docker_puts_them() {
        for (t, kind, want) in [
            ("db_pass", FileKind::Secret, "/run/secrets/db_pass"),
            ("/run/secrets/x", FileKind::Secret, "/run/secrets/x"),
            ("/etc/app/key", FileKind::Secret, "/etc/app/key"),
            ("app.conf", FileKind::Config, "/app.conf"),
            ("/etc/nginx/n.conf", FileKind::Config, "/etc/nginx/n.conf"),
        ] {
            assert_eq!(container_target(t, kind), Ok(want.to_string()), "{t}");
        }
        assert!(container_target("../etc/passwd", FileKind::Secret).is_err());
        assert!(container_target("", FileKind::Secret).is_err());
        assert!(container_target("/", FileKind::Config).is_err());
    }
}
