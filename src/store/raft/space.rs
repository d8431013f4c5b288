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
    let free = stat.blocks_available().saturating_mul(stat.fragment_size());
    if free < reserve {
        return Err(Error::NoSpace {
            path: dir.to_path_buf(),
            free,
            reserve,
        });
    }
    Ok(())
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
}
