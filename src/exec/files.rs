//! What both executors do with a task's secret and config files on the host: a private tmpfs for secrets, each
//! file written with its owner and mode (never readable by others while being written), and tearing the tmpfs down.
//!
//! Must not: log file contents, or touch mounts other than the task's own tmpfs.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use super::{ExecError, FileMount};

/// Which kind of file a target names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FileKind {
    /// A secret (relative targets live in `/run/secrets`).
    Secret,
    /// A config (relative targets live in `/`).
    Config,
}

/// Maps an I/O error to an `ExecError` saying what was being done.
pub(crate) fn io_err(context: String) -> impl FnOnce(io::Error) -> ExecError {
    move |e| ExecError::io(context, e)
}

/// Whether `p` is a directory with a file system of its own mounted on it.
pub(crate) fn is_mount_point(p: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (fs::symlink_metadata(p), p.parent().map(fs::metadata)) {
        (Ok(m), Some(Ok(parent))) => m.is_dir() && m.dev() != parent.dev(),
        _ => false,
    }
}

/// Creates `dir` and mounts a small private tmpfs on it (needs root). Idempotent.
pub(crate) fn mount_tmpfs(dir: &Path) -> Result<(), ExecError> {
    fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
    if !is_mount_point(dir) {
        let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
        mount(
            Some("tmpfs"),
            dir,
            Some("tmpfs"),
            flags,
            Some("size=16m,mode=0755"),
        )
        .map_err(|e| ExecError::sys(format!("mounting tmpfs at {}", dir.display()), e))?;
    }
    Ok(())
}

/// Unmounts every file system stacked on `dir`. Idempotent.
pub(crate) fn unmount_all(dir: &Path) -> Result<(), ExecError> {
    while is_mount_point(dir) {
        umount2(dir, MntFlags::MNT_DETACH)
            .map_err(|e| ExecError::sys(format!("unmounting {}", dir.display()), e))?;
    }
    Ok(())
}

/// Writes one secret/config file at `path`: created 0600, filled and synced, then given its owner (when root) and
/// its mode.
pub(crate) fn write_file(path: &Path, f: &FileMount, is_root: bool) -> Result<(), ExecError> {
    let ctx = format!("writing {}", path.display());
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err(ctx.clone()))?;
    file.write_all(&f.data).map_err(io_err(ctx.clone()))?;
    file.sync_all().map_err(io_err(ctx))?;
    if is_root {
        std::os::unix::fs::fchown(&file, Some(f.uid), Some(f.gid))
            .map_err(io_err(format!("chown {}", path.display())))?;
    }
    fs::set_permissions(path, fs::Permissions::from_mode(f.mode & 0o7777))
        .map_err(io_err(format!("chmod {}", path.display())))
}
