//! Secret and config files of a task: where they live (secrets on tmpfs only: a tmpfs mounted at
//! `<task-dir>/secrets` when root, else a directory under /dev/shm linked from the task dir),
//! writing them with their owner and mode, tearing them down, and the mount-namespace plan the
//! shim's child applies (private mounts, `/run/secrets` read-only, configs at absolute targets).
//!
//! Must not: log file contents, or change mounts of the host namespace other than the task's own
//! secrets tmpfs.

use std::ffi::{CStr, CString};
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::exec::{ExecError, FileMount};

use super::layout::TaskDir;

pub(crate) use crate::exec::files::FileKind;
use crate::exec::files::{self, io_err, relative_target};

/// The prefix of the `/dev/shm` directory holding secrets when not root (see [`files::shm_base`]).
const SHM_PREFIX: &str = "swarm-secrets";

/// Creates the secrets directory on tmpfs: a tmpfs on `<task-dir>/secrets` when root, else a link from there to a
/// fresh `/dev/shm/swarm-secrets-<uid>/<task_id>-<random>`. Idempotent.
pub(crate) fn setup_secrets_dir(
    dir: &TaskDir,
    task_id: &str,
    is_root: bool,
) -> Result<(), ExecError> {
    let secrets = dir.secrets();
    files::setup_secrets_dir(&secrets, is_root, SHM_PREFIX, |base| {
        let unique = format!("{task_id}-{:016x}", rand::random::<u64>());
        let target = base.join(unique);
        fs::create_dir(&target).map_err(io_err(format!("creating {}", target.display())))?;
        std::os::unix::fs::symlink(&target, &secrets)
            .map_err(io_err(format!("linking {}", secrets.display())))
    })
}

/// Writes `files` under `base` at their mirrored targets (see [`relative_target`]), with their mode (and owner
/// when root).
pub(crate) fn write_files(
    base: &Path,
    files: &[FileMount],
    kind: FileKind,
    is_root: bool,
) -> Result<(), ExecError> {
    files::write_files(base, files, is_root, |_, f| {
        relative_target(&f.target, kind).map(|rel| (rel, ()))
    })
    .map(drop)
}

/// Removes the secrets (unmounting the tmpfs or deleting the /dev/shm directory). Idempotent.
pub(crate) fn teardown_secrets(dir: &TaskDir) -> Result<(), ExecError> {
    files::teardown_secrets(&dir.secrets())
}

/// One step the child performs inside its new mount namespace. Paths are prepared as C strings
/// before fork so that applying a step allocates nothing.
#[derive(Debug)]
pub(crate) enum MountStep {
    /// `mount --make-rprivate /`.
    MakePrivate,
    /// Bind `src` onto `dst` (recursively), optionally remounting it read-only.
    Bind {
        src: CString,
        dst: CString,
        read_only: bool,
        optional: bool,
    },
    /// A fresh tmpfs on `dst` (nosuid, nodev, mode 0755).
    Tmpfs { dst: CString },
    /// A file system of type `fstype` on `dst` with `flags` and `data` (proc, devpts, tmpfs).
    Mount {
        fstype: &'static CStr,
        dst: CString,
        flags: MsFlags,
        data: &'static CStr,
        optional: bool,
    },
    /// Changes the flags of the mount at `dst` (`MS_REMOUNT | MS_BIND | flags`), e.g. read-only.
    Remount {
        dst: CString,
        flags: MsFlags,
        optional: bool,
    },
    /// A character device node, mode 0666.
    Mknod {
        dst: CString,
        major: u32,
        minor: u32,
    },
    /// `mkdir dst` (existing is fine).
    Mkdir { dst: CString, optional: bool },
    /// Create an empty file to bind a non-directory onto.
    Touch { dst: CString, optional: bool },
    /// Recreate a symlink.
    Symlink { target: CString, dst: CString },
    /// Lazily unmount `dst`.
    Detach { dst: CString },
}

pub(crate) fn cstr(p: &Path) -> Result<CString, ExecError> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| ExecError::InvalidSpec {
        task: p.display().to_string(),
        message: "path contains NUL".into(),
    })
}

/// Plans the task's mount namespace (root only): `/run/secrets` read-only when there are secrets
/// (a private tmpfs on `/run` re-exposing the host's entries when `/run/secrets` does not exist on
/// the host), configs with absolute targets bound read-only where the target file exists, and with
/// `resolv_conf` the task directory's `resolv.conf` over `/etc/resolv.conf`.
pub(crate) fn plan_namespace(
    dir: &TaskDir,
    has_secrets: bool,
    configs: &[FileMount],
    resolv_conf: bool,
) -> Result<Vec<MountStep>, ExecError> {
    let mut steps = vec![MountStep::MakePrivate];
    // the task's resolver (its network's gateway) over the host's; a host without the file gets none
    let etc_resolv = Path::new("/etc/resolv.conf");
    if resolv_conf && etc_resolv.exists() {
        steps.push(MountStep::Bind {
            src: cstr(&dir.resolv_conf())?,
            dst: cstr(etc_resolv)?,
            read_only: true,
            optional: false,
        });
    }
    if has_secrets {
        let run = Path::new("/run");
        let run_secrets = run.join("secrets");
        if !run_secrets.is_dir() {
            let stash = dir.run_stash();
            fs::create_dir_all(&stash).map_err(io_err(format!("creating {}", stash.display())))?;
            steps.push(MountStep::Bind {
                src: cstr(run)?,
                dst: cstr(&stash)?,
                read_only: false,
                optional: false,
            });
            steps.push(MountStep::Tmpfs { dst: cstr(run)? });
            let entries = fs::read_dir(run).map_err(io_err("listing /run".into()))?;
            for entry in entries.flatten() {
                let (src, dst) = (stash.join(entry.file_name()), run.join(entry.file_name()));
                let Ok(ft) = entry.file_type() else { continue };
                if ft.is_symlink() {
                    if let Ok(target) = fs::read_link(entry.path()) {
                        steps.push(MountStep::Symlink {
                            target: cstr(&target)?,
                            dst: cstr(&dst)?,
                        });
                    }
                } else {
                    let (src, dst) = (cstr(&src)?, cstr(&dst)?);
                    steps.push(if ft.is_dir() {
                        MountStep::Mkdir {
                            dst: dst.clone(),
                            optional: true,
                        }
                    } else {
                        MountStep::Touch {
                            dst: dst.clone(),
                            optional: true,
                        }
                    });
                    steps.push(MountStep::Bind {
                        src,
                        dst,
                        read_only: false,
                        optional: true,
                    });
                }
            }
            steps.push(MountStep::Mkdir {
                dst: cstr(&run_secrets)?,
                optional: false,
            });
            steps.push(MountStep::Detach { dst: cstr(&stash)? });
        }
        steps.push(MountStep::Bind {
            src: cstr(&dir.secrets())?,
            dst: cstr(&run_secrets)?,
            read_only: true,
            optional: false,
        });
    }
    for c in configs.iter().filter(|c| c.target.starts_with('/')) {
        let Ok(rel) = relative_target(&c.target, FileKind::Config) else {
            continue;
        };
        let target = Path::new(&c.target);
        if target.is_file() {
            let src = dir.configs().join(rel);
            steps.push(MountStep::Bind {
                src: cstr(&src)?,
                dst: cstr(target)?,
                read_only: true,
                optional: false,
            });
        }
    }
    Ok(steps)
}

/// Applies the plan in the forked child: new mount namespace, then each step. Only system calls;
/// no allocation (the paths are ready-made C strings). A failure names the step (its index; the
/// unshare itself is `steps.len()`).
pub(crate) fn apply_namespace(steps: &[MountStep]) -> Result<(), (usize, io::Error)> {
    use nix::sched::{unshare, CloneFlags};
    use nix::sys::stat::Mode;
    let errno = |e: nix::Error| (steps.len(), io::Error::from_raw_os_error(e as i32));
    unshare(CloneFlags::CLONE_NEWNS).map_err(errno)?;
    // Device nodes and directories get exactly the mode asked for; the task gets its umask back.
    let umask = nix::sys::stat::umask(Mode::empty());
    let result = apply_steps(steps);
    nix::sys::stat::umask(umask);
    result
}

fn apply_steps(steps: &[MountStep]) -> Result<(), (usize, io::Error)> {
    use nix::sys::stat::Mode;
    let none: Option<&std::ffi::CStr> = None;
    for (index, step) in steps.iter().enumerate() {
        let (result, optional) = match step {
            MountStep::MakePrivate => (
                mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none),
                false,
            ),
            MountStep::Bind {
                src,
                dst,
                read_only,
                optional,
            } => {
                let mut r = mount(
                    Some(src.as_c_str()),
                    dst.as_c_str(),
                    none,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    none,
                );
                if r.is_ok() && *read_only {
                    let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
                    r = mount(none, dst.as_c_str(), none, flags, none);
                }
                (r, *optional)
            }
            MountStep::Tmpfs { dst } => {
                let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
                (
                    mount(
                        Some(c"tmpfs"),
                        dst.as_c_str(),
                        Some(c"tmpfs"),
                        flags,
                        Some(c"mode=0755"),
                    ),
                    false,
                )
            }
            MountStep::Mount {
                fstype,
                dst,
                flags,
                data,
                optional,
            } => (
                mount(
                    Some(*fstype),
                    dst.as_c_str(),
                    Some(*fstype),
                    *flags,
                    Some(*data),
                ),
                *optional,
            ),
            MountStep::Remount {
                dst,
                flags,
                optional,
            } => (
                mount(
                    none,
                    dst.as_c_str(),
                    none,
                    MsFlags::MS_REMOUNT | MsFlags::MS_BIND | *flags,
                    none,
                ),
                *optional,
            ),
            MountStep::Mknod { dst, major, minor } => (
                nix::sys::stat::mknod(
                    dst.as_c_str(),
                    nix::sys::stat::SFlag::S_IFCHR,
                    Mode::from_bits_truncate(0o666),
                    nix::sys::stat::makedev(u64::from(*major), u64::from(*minor)),
                ),
                false,
            ),
            MountStep::Mkdir { dst, optional } => {
                match nix::unistd::mkdir(dst.as_c_str(), Mode::from_bits_truncate(0o755)) {
                    Err(nix::Error::EEXIST) => (Ok(()), *optional),
                    r => (r, *optional),
                }
            }
            MountStep::Touch { dst, optional } => {
                let flags = nix::fcntl::OFlag::O_CREAT
                    | nix::fcntl::OFlag::O_WRONLY
                    | nix::fcntl::OFlag::O_CLOEXEC;
                let r = nix::fcntl::open(dst.as_c_str(), flags, Mode::from_bits_truncate(0o644));
                (r.and_then(nix::unistd::close), *optional)
            }
            MountStep::Symlink { target, dst } => (
                nix::unistd::symlinkat(target.as_c_str(), nix::fcntl::AT_FDCWD, dst.as_c_str()),
                true,
            ),
            MountStep::Detach { dst } => (umount2(dst.as_c_str(), MntFlags::MNT_DETACH), true),
        };
        if let Err(e) = result {
            if !optional {
                return Err((index, io::Error::from_raw_os_error(e as i32)));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn files_get_their_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = FileMount {
            target: "/etc/a/b.conf".into(),
            data: b"x=1".to_vec(),
            uid: 0,
            gid: 0,
            mode: 0o640,
        };
        write_files(dir.path(), &[f], FileKind::Config, false).expect("write");
        let p = dir.path().join("etc/a/b.conf");
        assert_eq!(fs::read(&p).expect("read"), b"x=1");
        assert_eq!(
            fs::metadata(&p).expect("meta").permissions().mode() & 0o7777,
            0o640
        );
    }
}
