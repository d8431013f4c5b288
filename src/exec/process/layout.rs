//! The on-disk layout of one task directory (`<root>/<task_id>/`) and its status records:
//! atomic JSON writes, reads that tolerate absence, and pid liveness checks that survive pid
//! reuse (start time from `/proc/<pid>/stat`).
//!
//! Must not: start or signal processes, or hold secret data.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::exec::files::check_task_id;
use crate::exec::{ExecError, ExitStatus};

/// Version of the records written into task directories.
pub(crate) const RECORD_VERSION: u32 = 1;

/// Paths of one task's directory.
#[derive(Clone, Debug)]
pub(crate) struct TaskDir {
    dir: PathBuf,
}

impl TaskDir {
    /// `<root>/<task_id>`, refusing ids that could escape the root.
    pub(crate) fn new(root: &Path, task_id: &str) -> Result<Self, ExecError> {
        check_task_id(task_id)?;
        Ok(TaskDir {
            dir: root.join(task_id),
        })
    }

    /// Wraps an existing task directory path (the shim gets it as an argument).
    pub(crate) fn at(dir: PathBuf) -> Self {
        TaskDir { dir }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.dir
    }
    /// The spec as given (secret data never serialized).
    pub(crate) fn spec(&self) -> PathBuf {
        self.dir.join("spec.json")
    }
    /// Written last by `prepare`.
    pub(crate) fn prepared(&self) -> PathBuf {
        self.dir.join("prepared")
    }
    /// The resolved launch plan the shim executes.
    pub(crate) fn launch(&self) -> PathBuf {
        self.dir.join("launch.json")
    }
    /// The shim's pid and start time, written by the daemon after spawning it.
    pub(crate) fn shim(&self) -> PathBuf {
        self.dir.join("shim.json")
    }
    /// The task process's pid and start time, written by the shim.
    pub(crate) fn pid(&self) -> PathBuf {
        self.dir.join("pid.json")
    }
    /// The exit status, written once, atomically.
    pub(crate) fn exit(&self) -> PathBuf {
        self.dir.join("exit.json")
    }
    pub(crate) fn stdout(&self) -> PathBuf {
        self.dir.join("stdout.log")
    }
    pub(crate) fn stderr(&self) -> PathBuf {
        self.dir.join("stderr.log")
    }
    /// The shim's own diagnostics.
    pub(crate) fn shim_log(&self) -> PathBuf {
        self.dir.join("shim.log")
    }
    /// Secrets: a tmpfs mount point (root) or a symlink into /dev/shm.
    pub(crate) fn secrets(&self) -> PathBuf {
        self.dir.join("secrets")
    }
    pub(crate) fn configs(&self) -> PathBuf {
        self.dir.join("configs")
    }
    /// The task's init while its network namespace waits to be plumbed (written by the shim).
    pub(crate) fn netns(&self) -> PathBuf {
        self.dir.join("netns.json")
    }
    /// The daemon's answer once it plumbed the namespace: `ok`, or the error.
    pub(crate) fn network_done(&self) -> PathBuf {
        self.dir.join("network.done")
    }
    /// The node's ends of the task's veth pairs, for `remove`.
    pub(crate) fn network(&self) -> PathBuf {
        self.dir.join("network.json")
    }
    /// The task's `/etc/resolv.conf` (bound read-only in its mount namespace).
    pub(crate) fn resolv_conf(&self) -> PathBuf {
        self.dir.join("resolv.conf")
    }
    /// Where the shim's child stashes the host's /run while building its own.
    pub(crate) fn run_stash(&self) -> PathBuf {
        self.dir.join(".run")
    }
}

/// A process identity that survives pid reuse.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ProcRecord {
    pub(crate) version: u32,
    pub(crate) pid: i32,
    /// Field 22 of `/proc/<pid>/stat` (clock ticks since boot).
    pub(crate) start_time: u64,
}

impl ProcRecord {
    /// Records a live process; `None` when it is already gone.
    pub(crate) fn of(pid: i32) -> Option<Self> {
        proc_start_time(pid).map(|start_time| ProcRecord {
            version: RECORD_VERSION,
            pid,
            start_time,
        })
    }

    /// True while the same process (not a reused pid, not a zombie) exists.
    pub(crate) fn alive(&self) -> bool {
        proc_start_time(self.pid) == Some(self.start_time)
    }
}

/// The content of `exit.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ExitRecord {
    pub(crate) version: u32,
    pub(crate) status: ExitStatus,
}

/// Start time of a live, non-zombie process.
pub(crate) fn proc_start_time(pid: i32) -> Option<u64> {
    if pid <= 0 {
        return None;
    }
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?; // field 3
    if state == "Z" || state == "X" {
        return None;
    }
    // Field 22 is the 20th after the state (fields 3..=22).
    fields.nth(18)?.parse().ok()
}

/// Writes JSON to `path` via a temporary file, fsync and rename, so readers see all or nothing.
pub(crate) fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let data = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    write_atomic(path, &data)
}

pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    let file_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("record");
    let tmp = path.with_file_name(format!(".{file_name}.tmp.{}", std::process::id()));
    {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    if let Some(parent) = path.parent() {
        // Make the rename durable; failure here is not worth failing the write.
        let _ = fs::File::open(parent).and_then(|d| d.sync_all());
    }
    Ok(())
}

/// Reads a JSON record; `Ok(None)` when the file does not exist.
pub(crate) fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, ExecError> {
    match fs::read(path) {
        Ok(data) => serde_json::from_slice(&data)
            .map(Some)
            .map_err(|e| ExecError::io(format!("parsing {}", path.display()), io::Error::other(e))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ExecError::io(format!("reading {}", path.display()), e)),
    }
}

/// Reads `exit.json`.
pub(crate) fn read_exit(dir: &TaskDir) -> Result<Option<ExitStatus>, ExecError> {
    Ok(read_json::<ExitRecord>(&dir.exit())?.map(|r| r.status))
}

/// Writes `exit.json` unless one is already there (first writer wins).
pub(crate) fn write_exit(dir: &TaskDir, status: &ExitStatus) -> Result<(), ExecError> {
    if dir.exit().exists() {
        return Ok(());
    }
    let rec = ExitRecord {
        version: RECORD_VERSION,
        status: status.clone(),
    };
    write_json_atomic(&dir.exit(), &rec)
        .map_err(|e| ExecError::io(format!("writing {}", dir.exit().display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ids_cannot_escape_the_root() {
        let root = Path::new("/r");
        for bad in ["", ".", "..", "a/b", "../x", "a b"] {
            assert!(TaskDir::new(root, bad).is_err(), "{bad:?}");
        }
        let ok = TaskDir::new(root, "web.1.abc-D_9").expect("valid id");
        assert_eq!(ok.path(), Path::new("/r/web.1.abc-D_9"));
    }

    #[test]
    fn own_process_is_alive_and_reused_pid_is_not() {
        let me = ProcRecord::of(std::process::id() as i32).expect("self is alive");
        assert!(me.alive());
        let reused = ProcRecord {
            start_time: me.start_time + 1,
            ..me
        };
        assert!(!reused.alive());
        assert!(proc_start_time(-1).is_none());
    }

    #[test]
    fn atomic_json_roundtrip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let td = TaskDir::at(dir.path().to_path_buf());
        assert_eq!(read_exit(&td).expect("read"), None);
        write_exit(&td, &ExitStatus::exited(3)).expect("write");
        write_exit(&td, &ExitStatus::exited(4)).expect("second write ignored");
        assert_eq!(read_exit(&td).expect("read"), Some(ExitStatus::exited(3)));
    }
}
