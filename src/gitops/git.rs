//! A git source through the `git` binary (so users' credential helpers and SSH configuration apply): a clone
//! kept in a cache directory, fetched and checked out (detached) at the branch's newest commit. A stack's
//! revision is the last commit that touched its files; a new commit re-plans only the stacks whose files it
//! changed. Credentials in a URL (`https://user:token@host/…`) never reach the source id, the store or the log.
//!
//! Must not: talk to the cluster, or run anything but `git`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::scan::{stack_of, Entry};

/// A repository watched at a branch and a path.
pub struct Repo {
    url: String,
    branch: Option<String>,
    path: String,
    checkout: PathBuf,
    head: Option<String>,
}

/// `url` without a password or token (`https://user:secret@host/x` → `https://host/x`).
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let host_end = rest.find('/').unwrap_or(rest.len());
    match rest[..host_end].rfind('@') {
        Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

/// Runs `git` in `dir` (or nowhere in particular); its stdout, or an error naming the command and git's words.
async fn git(dir: Option<&Path>, args: &[&str]) -> Result<String, String> {
    let mut cmd = tokio::process::Command::new("git");
    if let Some(d) = dir {
        cmd.arg("-C").arg(d);
    }
    cmd.args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = cmd
        .output()
        .await
        .map_err(|e| format!("cannot run git: {e}"))?;
    if !out.status.success() {
        let shown: Vec<String> = args.iter().map(|a| redact_url(a)).collect();
        return Err(format!(
            "git {}: {}",
            shown.join(" "),
            redact_url(String::from_utf8_lossy(&out.stderr).trim())
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

impl Repo {
    /// The repository at `url` (branch: the remote's default when None), stacks under `path`, cloned into a
    /// folder of `cache` named after the URL and branch.
    pub fn new(url: &str, branch: Option<String>, path: &str, cache: &Path) -> Repo {
        let mut h = Sha256::new();
        h.update(url.as_bytes());
        h.update([0]);
        h.update(branch.as_deref().unwrap_or("").as_bytes());
        let folder = hex::encode(&h.finalize()[..8]);
        Repo {
            url: url.to_string(),
            branch,
            path: path.trim_matches('/').to_string(),
            checkout: cache.join(folder),
            head: None,
        }
    }

    /// `git:URL#BRANCH:PATH`, credentials left out.
    pub fn source_id(&self) -> String {
        format!(
            "git:{}#{}:{}",
            redact_url(&self.url),
            self.branch.as_deref().unwrap_or("HEAD"),
            self.path
        )
    }

    /// The folder the stacks are scanned in (the checkout's `path`).
    pub fn stacks_dir(&self) -> PathBuf {
        if self.path.is_empty() {
            self.checkout.clone()
        } else {
            self.checkout.join(&self.path)
        }
    }

    /// The commit checked out.
    pub fn head(&self) -> Option<&str> {
        self.head.as_deref()
    }

    /// Clones (once), fetches and checks out the branch's newest commit. The stacks whose files changed since
    /// the commit checked out before; None (all of them) on the first checkout.
    pub async fn sync(&mut self) -> Result<Option<BTreeSet<String>>, String> {
        if !self.checkout.join(".git").exists() {
            if let Some(parent) = self.checkout.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| format!("{}: {e}", parent.display()))?;
            }
            let dest = self.checkout.to_string_lossy().into_owned();
            git(
                None,
                &["clone", "--quiet", "--no-checkout", &self.url, &dest],
            )
            .await?;
        }
        let dir = self.checkout.clone();
        let branch = match &self.branch {
            Some(b) => b.clone(),
            None => git(
                Some(&dir),
                &["symbolic-ref", "--short", "refs/remotes/origin/HEAD"],
            )
            .await
            .map(|r| r.trim_start_matches("origin/").to_string())
            .unwrap_or_else(|_| "HEAD".to_string()),
        };
        git(Some(&dir), &["fetch", "--quiet", "origin", &branch]).await?;
        let target = git(Some(&dir), &["rev-parse", "FETCH_HEAD^{commit}"]).await?;
        if self.head.as_deref() == Some(target.as_str()) {
            return Ok(Some(BTreeSet::new()));
        }
        git(
            Some(&dir),
            &["checkout", "--quiet", "--force", "--detach", &target],
        )
        .await?;
        git(Some(&dir), &["clean", "--quiet", "-fdx"]).await?;
        let changed = match self.head.replace(target.clone()) {
            None => None,
            Some(old) => {
                let names = git(Some(&dir), &["diff", "--name-only", &old, &target]).await?;
                let base = self.stacks_dir();
                Some(
                    names
                        .lines()
                        .filter_map(|f| stack_of(&base, &dir.join(f)))
                        .collect(),
                )
            }
        };
        Ok(changed)
    }

    /// The last commit that touched the entry's files (the commit checked out when git cannot say).
    pub async fn revision_of(&self, entry: &Entry) -> Result<String, String> {
        let dir = self.checkout.clone();
        let mut args: Vec<String> = vec![
            "log".into(),
            "-1".into(),
            "--format=%H".into(),
            "HEAD".into(),
            "--".into(),
        ];
        let base = self.stacks_dir();
        args.push(base.join(&entry.path).to_string_lossy().into_owned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let rev = git(Some(&dir), &args).await?;
        if rev.is_empty() {
            return Ok(self.head.clone().unwrap_or_default());
        }
        Ok(rev)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_reach_the_source_id() {
        assert_eq!(
            redact_url("https://bob:tok3n@example.org/x.git"),
            "https://example.org/x.git"
        );
        assert_eq!(redact_url("file:///tmp/repo"), "file:///tmp/repo");
        assert_eq!(
            redact_url("git@github.com:a/b.git"),
            "git@github.com:a/b.git"
        );
        let r = Repo::new(
            "https://bob:tok3n@example.org/x.git",
            Some("main".into()),
            "/stacks/",
            Path::new("/c"),
        );
        assert_eq!(r.source_id(), "git:https://example.org/x.git#main:stacks");
        assert!(!r.source_id().contains("tok3n"));
    }
}
