//! Writing PKI material to disk: atomically (temporary file in the same directory, fsync, rename, fsync the
//! directory) and, for keys, readable by the owner only (mode 0600 from creation, never widened).
//!
//! Owns file modes and atomicity only; must not decide paths or formats (callers pass PEM bytes).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::PkiError;

/// Writes a secret (a private key) with mode 0600, atomically.
pub fn write_private_file(path: &Path, contents: &[u8]) -> Result<(), PkiError> {
    write_atomic(path, contents, 0o600)
}

/// Writes public material (a certificate) with mode 0644, atomically.
pub fn write_public_file(path: &Path, contents: &[u8]) -> Result<(), PkiError> {
    write_atomic(path, contents, 0o644)
}

fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), PkiError> {
    let io = |op: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| PkiError::Io { op, path, source }
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().ok_or_else(|| PkiError::Io {
        op: "write",
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "path has no file name"),
    })?;
    let suffix: u64 = rand::random();
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp-{suffix:016x}"));
    let tmp = dir.join(tmp_name);

    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(io("create", &tmp))?;
        file.write_all(contents).map_err(io("write", &tmp))?;
        file.sync_all().map_err(io("sync", &tmp))?;
        fs::rename(&tmp, path).map_err(io("rename into", path))?;
        // Persist the rename itself; a directory that cannot be opened for sync is not fatal.
        if let Ok(d) = File::open(&dir) {
            d.sync_all().map_err(io("sync directory", &dir))?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn private_files_are_0600_and_replaced_atomically() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("swarm-node.key");
        write_private_file(&key, b"first").expect("write");
        write_private_file(&key, b"second").expect("overwrite");
        assert_eq!(fs::read(&key).expect("read"), b"second");
        let mode = fs::metadata(&key).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let cert = dir.path().join("swarm-node.crt");
        write_public_file(&cert, b"cert").expect("cert");
        let mode = fs::metadata(&cert).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode & 0o600, 0o600);
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .expect("ls")
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
            .collect();
        assert!(leftovers.is_empty(), "no temporary files left behind");
    }

    #[test]
    fn missing_directory_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = write_private_file(&dir.path().join("nope/key"), b"x").expect_err("no dir");
        assert!(err.to_string().contains("nope"), "{err}");
    }
}
