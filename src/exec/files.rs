//! What both executors do with a task's files on the host: the check that a task id cannot escape the executor's
//! root, where a secret or config target lands (normalised, never `..`), the secrets directory (always on tmpfs: a
//! private tmpfs when root, else under `/dev/shm`), each file written with its owner and mode (never readable by
//! others while being written), and tearing the secrets directory down.
//!
//! Must not: log file contents, or touch mounts other than the task's own tmpfs.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

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

/// Refuses task ids that could name something outside the executor's root: 1-128 characters of
/// `[A-Za-z0-9._-]`, neither `.` nor `..`.
pub(crate) fn check_task_id(task_id: &str) -> Result<(), ExecError> {
    let valid = !task_id.is_empty()
        && task_id.len() <= 128
        && task_id != "."
        && task_id != ".."
        && task_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if !valid {
        return Err(ExecError::InvalidSpec {
            task: task_id.to_string(),
            message: "task id must be 1-128 characters of [A-Za-z0-9._-]".into(),
        });
    }
    Ok(())
}

/// The normal components of `path`, relative (root and `.` dropped); `..` is refused, naming `target`.
fn normal_components(path: &Path, target: &str) -> Result<PathBuf, String> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(format!("target {target:?} must not contain '..'"));
            }
        }
    }
    Ok(out)
}

/// Maps a target to a path relative to the secrets/configs directory (the process executor's layout): absolute
/// targets are mirrored (`/etc/app.conf` → `etc/app.conf`), secrets under `/run/secrets/` lose that prefix.
pub(crate) fn relative_target(target: &str, kind: FileKind) -> Result<PathBuf, String> {
    let t = match kind {
        FileKind::Secret => target.strip_prefix("/run/secrets/").unwrap_or(target),
        FileKind::Config => target,
    };
    let out = normal_components(Path::new(t), target)?;
    if out.as_os_str().is_empty() {
        return Err(format!("target {target:?} names no file"));
    }
    Ok(out)
}

/// The absolute path of a secret or config inside the container (the docker executor's bind target): relative
/// secret targets live in `/run/secrets/`, relative config targets in `/` (Docker's defaults).
pub(crate) fn container_target(target: &str, kind: FileKind) -> Result<String, String> {
    let base = match kind {
        FileKind::Secret => "/run/secrets",
        FileKind::Config => "/",
    };
    let out = Path::new("/").join(normal_components(&Path::new(base).join(target), target)?);
    if out == Path::new("/") || out == Path::new("/run/secrets") {
        return Err(format!("target {target:?} names no file"));
    }
    Ok(out.display().to_string())
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

/// The private directory (on tmpfs) where a daemon that is not root keeps secrets: `/dev/shm/<prefix>-<uid>`.
pub(crate) fn shm_base(prefix: &str) -> PathBuf {
    Path::new("/dev/shm").join(format!("{prefix}-{}", nix::unistd::geteuid()))
}

/// Prepares a task's secrets directory `dir`, always on tmpfs. As root: a private tmpfs mounted on `dir`.
/// Otherwise, unless `dir` already exists: [`shm_base`]`(shm_prefix)` is created private (0700) and `place`
/// makes `dir` with it (`dir` inside it, or a link to a directory inside it). Idempotent.
pub(crate) fn setup_secrets_dir(
    dir: &Path,
    is_root: bool,
    shm_prefix: &str,
    place: impl FnOnce(&Path) -> Result<(), ExecError>,
) -> Result<(), ExecError> {
    if is_root {
        return mount_tmpfs(dir);
    }
    if fs::symlink_metadata(dir).is_ok() {
        return Ok(());
    }
    if !Path::new("/dev/shm").is_dir() {
        return Err(ExecError::Unavailable(
            "no tmpfs for secrets: /dev/shm is missing and swarmd is not root".into(),
        ));
    }
    let base = shm_base(shm_prefix);
    fs::create_dir_all(&base).map_err(io_err(format!("creating {}", base.display())))?;
    fs::set_permissions(&base, fs::Permissions::from_mode(0o700))
        .map_err(io_err(format!("chmod {}", base.display())))?;
    place(&base)
}

/// Takes a task's secrets down: a link into `/dev/shm` is removed with what it points to, a tmpfs is unmounted
/// (a plain directory is left for the caller to delete). Idempotent.
pub(crate) fn teardown_secrets(dir: &Path) -> Result<(), ExecError> {
    let Ok(meta) = fs::symlink_metadata(dir) else {
        return Ok(());
    };
    if meta.file_type().is_symlink() {
        if let Ok(target) = fs::read_link(dir) {
            if target.starts_with("/dev/shm") {
                match fs::remove_dir_all(&target) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(ExecError::io(format!("removing {}", target.display()), e))
                    }
                }
            }
        }
        return fs::remove_file(dir).map_err(io_err(format!("removing {}", dir.display())));
    }
    unmount_all(dir)
}

/// Writes `files` under `base` (created, with any parent directories a file needs): file `i` at the relative
/// path `name(i, file)` gives, alongside a value of the caller's (e.g. the target in the container). Returns the
/// full paths written with those values, in order. A name that cannot be made is an invalid spec.
pub(crate) fn write_files<T>(
    base: &Path,
    files: &[FileMount],
    is_root: bool,
    mut name: impl FnMut(usize, &FileMount) -> Result<(PathBuf, T), String>,
) -> Result<Vec<(PathBuf, T)>, ExecError> {
    fs::create_dir_all(base).map_err(io_err(format!("creating {}", base.display())))?;
    let mut written = Vec::with_capacity(files.len());
    for (i, f) in files.iter().enumerate() {
        let (rel, value) = name(i, f).map_err(|message| ExecError::InvalidSpec {
            task: base.display().to_string(),
            message,
        })?;
        let path = base.join(&rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(io_err(format!("creating {}", parent.display())))?;
        }
        write_file(&path, f, is_root)?;
        written.push((path, value));
    }
    Ok(written)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ids_cannot_escape_the_root() {
        for bad in ["", ".", "..", "../x", "a/b", "a b", &"x".repeat(129)] {
            assert!(check_task_id(bad).is_err(), "{bad:?}");
        }
        check_task_id("web.1.abc-D_9").expect("valid id");
    }

    #[test]
    fn targets_are_mirrored_and_confined() {
        let table = [
            ("db_pass", FileKind::Secret, Ok("db_pass")),
            ("/run/secrets/db_pass", FileKind::Secret, Ok("db_pass")),
            ("/etc/app.conf", FileKind::Config, Ok("etc/app.conf")),
            ("app/./x.conf", FileKind::Config, Ok("app/x.conf")),
            ("../etc/shadow", FileKind::Secret, Err(())),
            ("/", FileKind::Config, Err(())),
        ];
        for (target, kind, want) in table {
            let got = relative_target(target, kind).map_err(|_| ());
            assert_eq!(got, want.map(PathBuf::from), "{target}");
        }
    }

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
