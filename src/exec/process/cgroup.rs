//! A task's own cgroup, created by its shim before the task starts and removed when it ends:
//! cgroup v2 when `/sys/fs/cgroup` is a cgroup2 mount (`/sys/fs/cgroup/swarm/<task_id>`, with the
//! memory, cpu and pids controllers enabled on the way), v1 otherwise (`<controller mount>/<the
//! shim's own cgroup>/swarm/<task_id>` in the memory, cpu and pids hierarchies). Limits:
//! memory (`memory.max` / `memory.limit_in_bytes`, and no swap beyond it), CPU (`cpu.max` / CFS
//! quota over a 100 ms period) and pids. After the task, whether the kernel's OOM killer acted
//! in it (`oom_kill` of `memory.events` / `memory.oom_control`).
//!
//! Must not: move the shim itself into the task's cgroup (only the task's init joins, through the
//! `cgroup.procs` files opened here), or leave a task's cgroup behind once its processes are gone.

use std::fs;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::exec::Limits;

const ROOT: &str = "/sys/fs/cgroup";
const PERIOD_US: i64 = 100_000;
/// The v1 hierarchies a task joins (the memory one is where OOM kills are counted).
const V1_CONTROLLERS: [&str; 3] = ["memory", "cpu", "pids"];

/// Which cgroup version this host uses, and the v1 hierarchies found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Layout {
    V2,
    /// `(controller, directory the shim's own cgroup is in)`.
    V1(Vec<(&'static str, PathBuf)>),
}

/// The host's cgroup layout, or `None` when no usable cgroup file system is mounted.
pub(crate) fn layout() -> Option<Layout> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").ok()?;
    let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let mut v1 = Vec::new();
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let left: Vec<&str> = left.split(' ').collect();
        let right: Vec<&str> = right.split(' ').collect();
        let (Some(root), Some(point), Some(fstype)) = (left.get(3), left.get(4), right.first())
        else {
            continue;
        };
        if *fstype == "cgroup2" && *point == ROOT {
            return Some(Layout::V2);
        }
        if *fstype != "cgroup" {
            continue;
        }
        let options = right.get(2).copied().unwrap_or("");
        for c in V1_CONTROLLERS {
            if !options.split(',').any(|o| o == c) || v1.iter().any(|(n, _)| *n == c) {
                continue;
            }
            // This process's cgroup in that hierarchy, relative to the mount's root.
            let mine = own
                .lines()
                .filter_map(|l| {
                    let mut f = l.splitn(3, ':').skip(1);
                    f.next().zip(f.next())
                })
                .find(|(ctrls, _)| ctrls.split(',').any(|x| x == c))
                .map(|(_, p)| p)
                .unwrap_or("/");
            let rel = mine.strip_prefix(root).unwrap_or(mine);
            v1.push((c, Path::new(point).join(rel.trim_start_matches('/'))));
        }
    }
    (!v1.is_empty()).then_some(Layout::V1(v1))
}

/// What the host cannot enforce, for the warning at start (empty when everything is there).
pub(crate) fn gaps() -> Vec<String> {
    match layout() {
        None => vec!["no cgroup file system is mounted: resource limits are not enforced".into()],
        Some(Layout::V2) => {
            let have =
                fs::read_to_string(Path::new(ROOT).join("cgroup.controllers")).unwrap_or_default();
            ["memory", "cpu", "pids"]
                .iter()
                .filter(|c| !have.split_whitespace().any(|h| h == **c))
                .map(|c| {
                    format!(
                        "the cgroup v2 {c} controller is not available: its limit is not enforced"
                    )
                })
                .collect()
        }
        Some(Layout::V1(found)) => V1_CONTROLLERS
            .iter()
            .filter(|c| !found.iter().any(|(n, _)| n == *c))
            .map(|c| {
                format!("the cgroup v1 {c} controller is not mounted: its limit is not enforced")
            })
            .collect(),
    }
}

/// One task's cgroup (one directory per v1 hierarchy, or one v2 directory).
#[derive(Debug)]
pub(crate) struct TaskCgroup {
    v2: bool,
    dirs: Vec<(&'static str, PathBuf)>,
}

fn write(path: &Path, value: &str) -> Result<(), String> {
    fs::write(path, value).map_err(|e| format!("writing {value:?} to {}: {e}", path.display()))
}

fn counter(text: &str, key: &str) -> u64 {
    text.lines()
        .filter_map(|l| l.split_once(' '))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0)
}

impl TaskCgroup {
    /// Creates the task's cgroup with `limits` (existing directories, left by a crashed shim,
    /// are reused).
    pub(crate) fn create(task_id: &str, limits: &Limits) -> Result<TaskCgroup, String> {
        let layout = layout().ok_or("no cgroup file system is mounted")?;
        let cg = match layout {
            Layout::V2 => {
                let parent = Path::new(ROOT).join("swarm");
                mkdir(&parent)?;
                for dir in [Path::new(ROOT), parent.as_path()] {
                    // One at a time: already enabled is fine, and a missing controller shows when
                    // its limit is written.
                    for c in ["+memory", "+cpu", "+pids"] {
                        let _ = write(&dir.join("cgroup.subtree_control"), c);
                    }
                }
                let dir = parent.join(task_id);
                mkdir(&dir)?;
                TaskCgroup {
                    v2: true,
                    dirs: vec![("", dir)],
                }
            }
            Layout::V1(found) => {
                let mut dirs = Vec::new();
                for (c, base) in found {
                    let dir = base.join("swarm").join(task_id);
                    mkdir(&dir)?;
                    dirs.push((c, dir));
                }
                TaskCgroup { v2: false, dirs }
            }
        };
        if let Err(e) = cg.set_limits(limits) {
            cg.remove();
            return Err(e);
        }
        Ok(cg)
    }

    fn dir(&self, controller: &str) -> Option<&Path> {
        self.dirs
            .iter()
            .find(|(c, _)| self.v2 || *c == controller)
            .map(|(_, d)| d.as_path())
    }

    fn need(&self, controller: &str) -> Result<&Path, String> {
        self.dir(controller).ok_or_else(|| {
            format!("the cgroup {controller} controller is not mounted: cannot enforce its limit")
        })
    }

    fn set_limits(&self, l: &Limits) -> Result<(), String> {
        if l.memory_bytes > 0 {
            let d = self.need("memory")?;
            let bytes = l.memory_bytes.to_string();
            if self.v2 {
                write(&d.join("memory.max"), &bytes)?;
                if d.join("memory.swap.max").exists() {
                    write(&d.join("memory.swap.max"), "0")?;
                }
            } else {
                write(&d.join("memory.limit_in_bytes"), &bytes)?;
                if d.join("memory.memsw.limit_in_bytes").exists() {
                    write(&d.join("memory.memsw.limit_in_bytes"), &bytes)?;
                }
            }
        }
        if l.nano_cpus > 0 {
            let d = self.need("cpu")?;
            let quota = (l.nano_cpus as i128 * PERIOD_US as i128 / 1_000_000_000).max(1000) as i64;
            if self.v2 {
                write(&d.join("cpu.max"), &format!("{quota} {PERIOD_US}"))?;
            } else {
                write(&d.join("cpu.cfs_period_us"), &PERIOD_US.to_string())?;
                write(&d.join("cpu.cfs_quota_us"), &quota.to_string())?;
            }
        }
        if l.pids > 0 {
            write(&self.need("pids")?.join("pids.max"), &l.pids.to_string())?;
        }
        Ok(())
    }

    /// The `cgroup.procs` files, open for writing: the task's init writes `0` to each to join.
    pub(crate) fn procs_files(&self) -> Result<Vec<OwnedFd>, String> {
        self.dirs
            .iter()
            .map(|(_, d)| {
                let p = d.join("cgroup.procs");
                fs::OpenOptions::new()
                    .write(true)
                    .open(&p)
                    .map(OwnedFd::from)
                    .map_err(|e| format!("opening {}: {e}", p.display()))
            })
            .collect()
    }

    /// Whether the kernel's OOM killer killed a process of the task.
    pub(crate) fn oom_killed(&self) -> bool {
        let Some(d) = self.dir("memory") else {
            return false;
        };
        let file = if self.v2 {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        counter(
            &fs::read_to_string(d.join(file)).unwrap_or_default(),
            "oom_kill",
        ) > 0
    }

    /// SIGKILLs whatever is left in the cgroup and removes its directories (retrying while the
    /// kernel still tears processes down). Best effort: failures are printed to the shim's log.
    pub(crate) fn remove(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        for (_, d) in &self.dirs {
            loop {
                let procs = fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
                for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                match fs::remove_dir(d) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(e) if Instant::now() >= deadline => {
                        eprintln!("removing cgroup {}: {e}", d.display());
                        break;
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
    }
}

/// Where the cgroup of task `task_id` is (whether or not it exists).
fn dirs_of(task_id: &str) -> Vec<(&'static str, PathBuf)> {
    match layout() {
        Some(Layout::V2) => vec![("", Path::new(ROOT).join("swarm").join(task_id))],
        Some(Layout::V1(found)) => found
            .into_iter()
            .map(|(c, base)| (c, base.join("swarm").join(task_id)))
            .collect(),
        None => Vec::new(),
    }
}

/// Removes the cgroup a task's shim left behind (the shim was killed): when the daemon removes
/// the task. Nothing to do when there is none.
pub(crate) fn remove_leftover(task_id: &str) {
    let dirs: Vec<_> = dirs_of(task_id)
        .into_iter()
        .filter(|(_, d)| d.is_dir())
        .collect();
    if !dirs.is_empty() {
        TaskCgroup {
            v2: matches!(layout(), Some(Layout::V2)),
            dirs,
        }
        .remove();
    }
}

/// The `cgroup.procs` files of a running task's cgroup, open for writing (a health check joins
/// it); empty when it has none.
pub(crate) fn procs_of(task_id: &str) -> Vec<OwnedFd> {
    dirs_of(task_id)
        .iter()
        .map(|(_, d)| d)
        .filter_map(|d| {
            fs::OpenOptions::new()
                .write(true)
                .open(d.join("cgroup.procs"))
                .ok()
        })
        .map(OwnedFd::from)
        .collect()
}

fn mkdir(dir: &Path) -> Result<(), String> {
    match fs::create_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) => Err(format!("creating cgroup {}: {e}", dir.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_read_by_key() {
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n";
        assert_eq!(counter(v1, "oom_kill"), 2);
        assert_eq!(counter("low 0\noom 1\noom_kill 0\n", "oom_kill"), 0);
        assert_eq!(counter("", "oom_kill"), 0);
    }
}
