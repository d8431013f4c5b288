//! Linux capabilities of a task run as root: Docker's default set, the stack's `cap_add` /
//! `cap_drop` (names with or without `CAP_`, any case, and `ALL`) resolved to a bit set, and the
//! system calls the task's forked child makes to keep only that set (bounding set, effective,
//! permitted and inheritable sets, no ambient capabilities) and to set `no_new_privs`.
//!
//! Must not: allocate in [`apply`] (it runs between fork and exec), or accept a name it does not
//! know (a typo must not silently grant or keep a capability).

use std::io;

use nix::libc;

/// Capability names in kernel order (the index is the capability number).
const NAMES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// Docker's default capabilities of a container.
pub(crate) const DOCKER_DEFAULT: [&str; 14] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

fn number(name: &str) -> Result<u32, String> {
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    NAMES
        .iter()
        .position(|n| *n == bare)
        .map(|i| i as u32)
        .ok_or_else(|| format!("unknown capability: {name:?}"))
}

/// Whether `name` is a capability this executor knows (or `ALL`): `stack validate` asks too.
pub fn check_name(name: &str) -> Result<(), String> {
    if is_all(name) {
        return Ok(());
    }
    number(name).map(drop)
}

fn is_all(name: &str) -> bool {
    name.trim().eq_ignore_ascii_case("ALL")
}

/// Docker's rules: `cap_add: [ALL]` gives every capability but the dropped ones; `cap_drop: [ALL]`
/// keeps only the added ones; otherwise the default set plus the added minus the dropped.
pub(crate) fn resolve(add: &[String], drop: &[String]) -> Result<u64, String> {
    let all: u64 = (1u64 << NAMES.len()) - 1;
    let bits = |names: &[String]| -> Result<u64, String> {
        names
            .iter()
            .filter(|n| !is_all(n))
            .try_fold(0u64, |acc, n| Ok(acc | 1u64 << number(n)?))
    };
    let (added, dropped) = (bits(add)?, bits(drop)?);
    let default = DOCKER_DEFAULT
        .iter()
        .map(|n| number(n).map(|b| 1u64 << b))
        .sum::<Result<u64, String>>()?;
    Ok(if add.iter().any(|n| is_all(n)) {
        all & !dropped
    } else if drop.iter().any(|n| is_all(n)) {
        added
    } else {
        (default | added) & !dropped
    })
}

/// The names in a set, in kernel order.
#[cfg(test)]
pub(crate) fn names(set: u64) -> Vec<&'static str> {
    NAMES
        .iter()
        .enumerate()
        .filter(|(i, _)| set & (1u64 << i) != 0)
        .map(|(_, n)| *n)
        .collect()
}

/// The highest capability number this kernel knows (`/proc/sys/kernel/cap_last_cap`).
pub(crate) fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(NAMES.len() as u32 - 1)
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAP_VERSION_3: u32 = 0x2008_0522;

fn check(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Step 1, while still root with every capability: drops everything outside `set` from the
/// bounding set, so no later exec (a setuid binary, file capabilities) can regain it.
pub(crate) fn drop_bounding(set: u64, last_cap: u32) -> io::Result<()> {
    for cap in 0..=last_cap.min(63) {
        if set & (1u64 << cap) == 0 {
            // SAFETY: plain prctl with integer arguments.
            let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
            // EINVAL: the kernel does not know this capability.
            if r < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL) {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

/// Step 2, after the user switch: the effective, permitted and inheritable sets become `set`
/// (for a non-root user the kernel has already cleared the first two, so this clears the
/// inheritable set), ambient capabilities are cleared, and `no_new_privs` is set.
pub(crate) fn restrict(set: u64, root: bool) -> io::Result<()> {
    let keep = if root { set } else { 0 };
    let mut header = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: header and a two-element data array as capget(2) expects for version 3.
    check(unsafe {
        libc::syscall(
            libc::SYS_capget,
            &mut header as *mut CapHeader,
            data.as_mut_ptr(),
        ) as libc::c_int
    })?;
    for (i, d) in data.iter_mut().enumerate() {
        let word = (keep >> (32 * i)) as u32;
        d.effective &= word;
        d.permitted &= word;
        d.inheritable = word & d.permitted;
    }
    header.version = CAP_VERSION_3;
    header.pid = 0;
    // SAFETY: as above, for capset(2).
    check(unsafe {
        libc::syscall(
            libc::SYS_capset,
            &mut header as *mut CapHeader,
            data.as_ptr(),
        ) as libc::c_int
    })?;
    // SAFETY: plain prctl calls with integer arguments.
    unsafe {
        // EINVAL on kernels without ambient capabilities: nothing to clear.
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        );
        check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn resolves_like_docker() {
        let default = resolve(&[], &[]).expect("default");
        assert_eq!(names(default).len(), 14);
        assert!(names(default).contains(&"NET_BIND_SERVICE"));
        assert!(!names(default).contains(&"SYS_ADMIN"));
        let more = resolve(&s(&["cap_sys_admin"]), &s(&["NET_RAW", "CAP_MKNOD"])).expect("tweak");
        let n = names(more);
        assert!(n.contains(&"SYS_ADMIN") && !n.contains(&"NET_RAW") && !n.contains(&"MKNOD"));
        assert_eq!(n.len(), 13);
        assert_eq!(
            names(resolve(&s(&["CHOWN"]), &s(&["ALL"])).expect("drop all")),
            ["CHOWN"]
        );
        let all = resolve(&s(&["ALL"]), &s(&["SYS_ADMIN"])).expect("add all");
        assert_eq!(names(all).len(), NAMES.len() - 1);
        assert_eq!(
            resolve(&s(&["CAP_NOPE"]), &[]),
            Err("unknown capability: \"CAP_NOPE\"".into())
        );
    }
}
