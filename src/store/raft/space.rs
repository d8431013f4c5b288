//! Free space on the filesystem of the Raft state directory, like etcd's NOSPACE alarm but checked before every
//! proposal: below the reserve a write is refused with [`Error::NoSpace`] before the log store could fail on a
//! full disk (a failed append stops openraft for good). Nothing is latched: the next proposal checks again, so
//! writes resume by themselves once space is freed. Reads never come here.
//!
//! Must not: write anything.

use std::path::Path;

use super::error::Error;

/// Fails with [`Error::NoSpace`] when less than `reserve` bytes are available to swarmd on the filesystem
/// holding `dir`. A filesystem that cannot be asked (statvfs fails) is not refused: the append reports a real
/// failure.
pub(crate) fn check(dir: &Path, reserve: u64) -> Result<(), Error> {
    if reserve == 0 {
        return Ok(());
    }
    let Ok(stat) = nix::sys::statvfs::statvfs(dir) else {
        return Ok(());
    };
    let free = (stat.blocks_available() as u64).saturating_mul(stat.fragment_size() as u64);
    if free < reserve {
        return Err(Error::NoSpace {
            path: dir.to_path_buf(),
            free,
            reserve,
        });
    }
    Ok(())
}

/// A byte count for people: `12.5 MiB`.
pub(crate) fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_below_the_reserve_and_names_the_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(check(dir.path(), 0), Ok(()));
        assert_eq!(check(dir.path(), 1), Ok(()));
        let e = check(dir.path(), u64::MAX).unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with(&format!("no space left on {}: ", dir.path().display())),
            "{text}"
        );
        assert!(
            text.contains("writes are refused until space is freed"),
            "{text}"
        );
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(64 << 20), "64.0 MiB");
        assert_eq!(human(3 << 29), "1.5 GiB");
    }
}
