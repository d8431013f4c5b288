//! Process limits swarmd sets for itself at start: the open-files soft limit goes up to the hard limit, so a
//! burst of connections or tasks does not starve the daemon at the common default of 1,024
//! (`accept failed: Too many open files`). Tasks inherit the raised limit, as Docker's containers inherit
//! dockerd's.
//!
//! Must not: lower a limit, or fail the start when the limit cannot be changed (it is logged instead).

use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// The open-files limit before and after: `(old_soft, new_soft)`.
pub fn raise_open_files() -> Result<(u64, u64), String> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)
        .map_err(|e| format!("cannot read the open-files limit: {e}"))?;
    if soft >= hard {
        return Ok((soft, soft));
    }
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
        .map_err(|e| format!("cannot raise the open-files limit from {soft} to {hard}: {e}"))?;
    Ok((soft, hard))
}

/// [`raise_open_files`], logged.
pub fn raise_open_files_logged() {
    match raise_open_files() {
        Ok((old, new)) if old != new => {
            tracing::info!("open files limit raised from {old} to {new}")
        }
        Ok(_) => {}
        Err(e) => tracing::warn!("{e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_reaches_the_hard_limit_and_stays_there() {
        let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        let (_, new) = raise_open_files().expect("raised");
        assert_eq!(new, hard);
        assert_eq!(getrlimit(Resource::RLIMIT_NOFILE).unwrap(), (hard, hard));
        // a second call changes nothing
        assert_eq!(raise_open_files().unwrap(), (hard, hard));
    }
}
