//! Host-side files of one container task: `<root>/<task_id>/secrets` (a tmpfs mount when root,
//! else `/dev/shm/swarm-docker-<uid>/<task_id>`: never persistent disk) and
//! `<root>/<task_id>/configs`, one file per secret/config, each bind-mounted read-only into the
//! container at its target.
//!
//! Must not: keep secret data anywhere but tmpfs, or follow targets out of the container's view
//! (`..`).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::exec::files::{self, check_task_id, container_target, io_err, FileKind};
use crate::exec::{ExecError, FileMount};

/// The prefix of the `/dev/shm` directory holding secrets when not root (see [`files::shm_base`]).
const SHM_PREFIX: &str = "swarm-docker";

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
        check_task_id(task_id)?;
        let dir = root.join(task_id);
        let secrets = if is_root {
            dir.join("secrets")
        } else {
            files::shm_base(SHM_PREFIX).join(task_id)
        };
        Ok(TaskFiles {
            dir,
            secrets,
            is_root,
        })
    }

    /// The task's directory on the host.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
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

    /// The secrets directory: a tmpfs on `<root>/<task_id>/secrets` when root, else
    /// `/dev/shm/swarm-docker-<uid>/<task_id>`.
    fn setup_secrets_dir(&self) -> Result<(), ExecError> {
        let s = &self.secrets;
        files::setup_secrets_dir(s, self.is_root, SHM_PREFIX, |_| {
            fs::create_dir_all(s).map_err(io_err(format!("creating {}", s.display())))
        })
    }

    /// Writes `files` under `base` as `0`, `1`, ...; returns their binds to their container targets.
    fn write_files(
        &self,
        base: &Path,
        files: &[FileMount],
        kind: FileKind,
    ) -> Result<Vec<String>, ExecError> {
        let written = files::write_files(base, files, self.is_root, |i, f| {
            container_target(&f.target, kind).map(|target| (PathBuf::from(i.to_string()), target))
        })?;
        Ok(written
            .into_iter()
            .map(|(path, target)| format!("{}:{target}:ro", path.display()))
            .collect())
    }

    /// Removes everything: unmounts the secrets tmpfs, deletes the directories. Idempotent.
    pub(crate) fn remove(&self) -> Result<(), ExecError> {
        files::teardown_secrets(&self.secrets)?;
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
