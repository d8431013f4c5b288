//! The isolation half of a task's mount namespace (root only), planned by the shim and applied by
//! the task's init after the secrets/configs steps of [`super::mounts::plan_namespace`]:
//!
//! 1. every mount the host has becomes read-only and `nodev` in the task's namespace (a root task
//!    must not rewrite the host's binaries or configuration, and keeps Docker's `MKNOD`, so a
//!    device node it creates must be useless), except `/tmp`, `/var/tmp` and the task's working
//!    directory (when not `/`), which stay writable; `/dev` is a fresh tmpfs with only `null`,
//!    `zero`, `full`, `random`, `urandom`, `tty`, a private `/dev/shm` and `/dev/pts`;
//! 2. each hidden path (swarmd's state dir — keys, Raft data, the control socket, every task's
//!    directory — `/sys/fs/cgroup`, and the host's unix sockets under `/run`, such as Docker's,
//!    containerd's or D-Bus's, which a read-only mount does not protect) is covered with an empty
//!    read-only tmpfs (a file with `/dev/null`); the task's own `secrets/` and `configs/` are bound back read-only at their
//!    paths (its `SWARM_SECRETS_DIR` / `SWARM_CONFIGS_DIR`), through a stash of the task directory
//!    on `/proc` taken before covering;
//! 3. `/proc` is the task's PID namespace's own, with Docker's masked paths (`/proc/kcore`,
//!    `/proc/keys`, …) and read-only paths (`/proc/sys`, `/proc/sysrq-trigger`, …); `/sys` is
//!    read-only.
//!
//! Must not: change a mount of the host's namespace (every step runs in the task's), or hide the
//! task's own secrets and configs.

use std::fs;
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;

use crate::exec::ExecError;

use super::layout::TaskDir;
use super::mounts::{cstr, MountStep};

const STASH: &str = "/proc";
/// Docker's masked paths: unreadable in a container.
const MASKED: [&str; 9] = [
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
];
/// Docker's read-only paths.
const READ_ONLY: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];
/// The devices a task gets: `(name, major, minor)`.
const DEVICES: [(&str, u32, u32); 6] = [
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// Host directories a task may still write (besides its working directory).
const WRITABLE: [&str; 2] = ["/tmp", "/var/tmp"];

/// Paths hidden from every task whatever the executor is told (the cgroup file system, so a
/// root task cannot lift its own limits).
pub(crate) const ALWAYS_HIDDEN: [&str; 1] = ["/sys/fs/cgroup"];

fn mount_flags(options: &str) -> MsFlags {
    let mut f = MsFlags::empty();
    for o in options.split(',') {
        f |= match o {
            "ro" => MsFlags::MS_RDONLY,
            "nosuid" => MsFlags::MS_NOSUID,
            "nodev" => MsFlags::MS_NODEV,
            "noexec" => MsFlags::MS_NOEXEC,
            "noatime" => MsFlags::MS_NOATIME,
            "nodiratime" => MsFlags::MS_NODIRATIME,
            "relatime" => MsFlags::MS_RELATIME,
            "strictatime" => MsFlags::MS_STRICTATIME,
            _ => MsFlags::empty(),
        };
    }
    f
}

/// Mountinfo escapes spaces and a few other bytes as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| u8::from_str_radix(d, 8).ok());
        match octal {
            Some(n) if b[i] == b'\\' => {
                out.push(n);
                i += 4;
            }
            _ => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The host's mounts, `(mount point, per-mount flags)`, outside `/proc` and `/dev`.
fn host_mounts() -> Vec<(PathBuf, MsFlags)> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut out = Vec::new();
    for line in info.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let (Some(point), Some(opts)) = (f.get(4), f.get(5)) else {
            continue;
        };
        let point = PathBuf::from(unescape(point));
        if point.starts_with("/proc") || point.starts_with("/dev") {
            continue;
        }
        out.push((point, mount_flags(opts)));
    }
    out
}

/// Unix sockets under `dir`, at most `depth` levels down (symlinks not followed).
fn sockets(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
    use std::os::unix::fs::FileTypeExt;
    if depth == 0 {
        return;
    }
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        match e.file_type() {
            Ok(t) if t.is_socket() => out.push(e.path()),
            Ok(t) if t.is_dir() => sockets(&e.path(), depth - 1, out),
            _ => {}
        }
    }
}

/// Hidden paths that exist, minus those inside another hidden directory.
fn effective_hidden(hidden: &[PathBuf]) -> Vec<(PathBuf, bool)> {
    let mut host_sockets = Vec::new();
    sockets(Path::new("/run"), 5, &mut host_sockets);
    let mut all: Vec<(PathBuf, bool)> = hidden
        .iter()
        .cloned()
        .chain(ALWAYS_HIDDEN.iter().map(PathBuf::from))
        .chain(host_sockets)
        .filter_map(|p| fs::symlink_metadata(&p).ok().map(|m| (p, m.is_dir())))
        .collect();
    all.sort();
    all.dedup();
    let dirs: Vec<PathBuf> = all
        .iter()
        .filter(|(_, d)| *d)
        .map(|(p, _)| p.clone())
        .collect();
    all.retain(|(p, _)| !dirs.iter().any(|d| d != p && p.starts_with(d)));
    all
}

fn mkdir_chain(steps: &mut Vec<MountStep>, from: &Path, to: &Path) -> Result<(), ExecError> {
    let Ok(rel) = to.strip_prefix(from) else {
        return Ok(());
    };
    let mut cur = from.to_path_buf();
    for c in rel.components() {
        cur.push(c);
        steps.push(MountStep::Mkdir {
            dst: cstr(&cur)?,
            optional: false,
        });
    }
    Ok(())
}

/// Plans steps 1 to 3 above for the task in `dir`.
pub(crate) fn plan_isolation(
    dir: &TaskDir,
    hidden: &[PathBuf],
    has_secrets: bool,
    has_configs: bool,
    working_dir: &Path,
) -> Result<Vec<MountStep>, ExecError> {
    let mut steps = Vec::new();
    // 1. Writable places become mounts of their own (bound onto themselves), then every host
    // mount is remounted read-only and nodev, then a /dev of our own.
    let mut writable: Vec<PathBuf> = WRITABLE
        .iter()
        .map(PathBuf::from)
        .chain((working_dir != Path::new("/")).then(|| working_dir.to_path_buf()))
        .filter(|p| p.is_dir())
        .collect();
    writable.sort();
    writable.dedup();
    for w in &writable {
        let w = cstr(w)?;
        steps.push(MountStep::Bind {
            src: w.clone(),
            dst: w,
            read_only: false,
            optional: true,
        });
    }
    for (point, flags) in host_mounts() {
        let read_only = if writable.contains(&point) {
            MsFlags::empty()
        } else {
            MsFlags::MS_RDONLY
        };
        steps.push(MountStep::Remount {
            dst: cstr(&point)?,
            flags: flags | read_only | MsFlags::MS_NODEV,
            optional: true,
        });
    }
    for w in &writable {
        steps.push(MountStep::Remount {
            dst: cstr(w)?,
            flags: MsFlags::MS_NODEV | MsFlags::MS_NOSUID,
            optional: true,
        });
    }
    let dev = Path::new("/dev");
    steps.push(MountStep::Mount {
        fstype: c"tmpfs",
        dst: cstr(dev)?,
        flags: MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
        data: c"mode=755,size=65536k",
        optional: false,
    });
    for (name, major, minor) in DEVICES {
        steps.push(MountStep::Mknod {
            dst: cstr(&dev.join(name))?,
            major,
            minor,
        });
    }
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ] {
        steps.push(MountStep::Symlink {
            target: cstr(Path::new(target))?,
            dst: cstr(&dev.join(name))?,
        });
    }
    for (name, fstype, flags, data) in [
        (
            "shm",
            c"tmpfs",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            c"mode=1777,size=65536k",
        ),
        (
            "pts",
            c"devpts",
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            c"newinstance,ptmxmode=0666,mode=0620",
        ),
    ] {
        let dst = cstr(&dev.join(name))?;
        steps.push(MountStep::Mkdir {
            dst: dst.clone(),
            optional: false,
        });
        steps.push(MountStep::Mount {
            fstype,
            dst,
            flags,
            data,
            optional: name == "pts",
        });
    }

    // 2. hidden paths, with the task's own files bound back.
    let hidden = effective_hidden(hidden);
    let task = dir.path();
    let covering: Vec<&PathBuf> = hidden
        .iter()
        .filter(|(p, is_dir)| *is_dir && task.starts_with(p))
        .map(|(p, _)| p)
        .collect();
    let stash = Path::new(STASH);
    if !covering.is_empty() {
        steps.push(MountStep::Bind {
            src: cstr(task)?,
            dst: cstr(stash)?,
            read_only: false,
            optional: false,
        });
    }
    for (path, is_dir) in &hidden {
        steps.push(if *is_dir {
            MountStep::Tmpfs { dst: cstr(path)? }
        } else {
            MountStep::Bind {
                src: cstr(&dev.join("null"))?,
                dst: cstr(path)?,
                read_only: true,
                optional: true,
            }
        });
    }
    if let Some(cover) = covering.last() {
        let back = [(has_secrets, "secrets"), (has_configs, "configs")];
        for (_, name) in back.iter().filter(|(wanted, _)| *wanted) {
            let target = task.join(name);
            mkdir_chain(&mut steps, cover, &target)?;
            steps.push(MountStep::Bind {
                src: cstr(&stash.join(name))?,
                dst: cstr(&target)?,
                read_only: true,
                optional: false,
            });
        }
    }
    for (path, is_dir) in &hidden {
        if *is_dir {
            steps.push(MountStep::Remount {
                dst: cstr(path)?,
                flags: MsFlags::MS_RDONLY
                    | MsFlags::MS_NOSUID
                    | MsFlags::MS_NODEV
                    | MsFlags::MS_NOEXEC,
                optional: false,
            });
        }
    }
    if !covering.is_empty() {
        steps.push(MountStep::Detach { dst: cstr(stash)? });
    }

    // 3. our own /proc, masked and read-only paths, read-only /sys.
    let proc = cstr(Path::new("/proc"))?;
    steps.push(MountStep::Detach { dst: proc.clone() });
    steps.push(MountStep::Mount {
        fstype: c"proc",
        dst: proc,
        flags: MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        data: c"",
        optional: false,
    });
    for p in MASKED {
        let path = Path::new(p);
        let Ok(meta) = fs::symlink_metadata(path) else {
            continue;
        };
        steps.push(if meta.is_dir() {
            MountStep::Mount {
                fstype: c"tmpfs",
                dst: cstr(path)?,
                flags: MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                data: c"size=0",
                optional: true,
            }
        } else {
            MountStep::Bind {
                src: cstr(&dev.join("null"))?,
                dst: cstr(path)?,
                read_only: false,
                optional: true,
            }
        });
    }
    for p in READ_ONLY {
        let path = cstr(Path::new(p))?;
        steps.push(MountStep::Bind {
            src: path.clone(),
            dst: path,
            read_only: true,
            optional: true,
        });
    }
    steps.push(MountStep::Remount {
        dst: cstr(Path::new("/sys"))?,
        flags: MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        optional: true,
    });
    Ok(steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_fields_are_decoded() {
        assert_eq!(unescape("/mnt/a\\040b"), "/mnt/a b");
        assert_eq!(unescape("/plain"), "/plain");
        let f = mount_flags("ro,nosuid,relatime");
        assert!(f.contains(MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_RELATIME));
        assert!(!f.contains(MsFlags::MS_NODEV));
    }

    #[test]
    fn nested_hidden_paths_are_covered_once() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let state = tmp.path().join("state");
        let tasks = state.join("tasks");
        fs::create_dir_all(&tasks).expect("dirs");
        let hidden = effective_hidden(&[tasks.clone(), state.clone(), tmp.path().join("none")]);
        assert!(hidden.contains(&(state, true)));
        assert!(!hidden.iter().any(|(p, _)| *p == tasks));
    }
}
