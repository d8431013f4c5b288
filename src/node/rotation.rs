//! A manager's half of a root CA rotation, as a part of `swarmd`: follows the cluster object's rotation
//! ([`crate::manager::rotation`]) — swaps the authority the CA service, the control API and the manager's own
//! certificate use; records this manager's own node once its certificate comes from the new root; on the
//! leader, finishes the rotation once every node is rotated; and once it is done, replaces `certs/ca.crt` and
//! `certs/ca.key` with the new root (crash-safely, [`super::keyfiles::RootFiles`]; a manager that crashed before
//! that restores it at its next start from the sealed key in the store).
//!
//! Must not: log a key, or decide anything the cluster object does not say.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::keyfiles::{RootFiles, WRITING};
use super::renew::CertFiles;
use crate::manager::proposer::Proposer;
use crate::manager::rotation;
use crate::pki::{Authority, RootCa, SharedAuthority};
use crate::secrets::DataKey;
use crate::store::{Op, Store};

/// Follows the cluster object's root CA rotation on this manager.
pub struct RotationLoop {
    dir: PathBuf,
    store: Store,
    proposer: Proposer,
    key: DataKey,
    authority: SharedAuthority,
    disk: Arc<RootCa>,
    node_id: String,
    lock: crate::secrets::lock::SharedLock,
    last_error: Option<String>,
}

impl RotationLoop {
    /// The loop for the manager in `dir` whose disk holds `disk`; the authority it starts with already
    /// follows the store (call before the listeners start, so they trust the right roots from the first
    /// connection).
    pub fn new(
        dir: PathBuf,
        store: Store,
        proposer: Proposer,
        key: DataKey,
        disk: Arc<RootCa>,
        node_id: String,
        lock: crate::secrets::lock::SharedLock,
    ) -> RotationLoop {
        let authority = Authority::single(disk.clone()).shared();
        let mut this = RotationLoop {
            dir,
            store,
            proposer,
            key,
            authority,
            disk,
            node_id,
            lock,
            last_error: None,
        };
        this.follow();
        this
    }

    /// The authority every part of this manager signs and trusts with.
    pub fn authority(&self) -> SharedAuthority {
        self.authority.clone()
    }

    /// Runs until the process ends.
    pub async fn run(mut self) {
        let mut changes = self.store.subscribe();
        loop {
            self.follow();
            self.record_own_node().await;
            self.complete().await;
            let _ = tokio::time::timeout(Duration::from_secs(2), changes.changed()).await;
        }
    }

    /// The authority (and the root on disk) the cluster object asks for.
    fn follow(&mut self) {
        let desired = self
            .store
            .view(|s| rotation::desired(&self.disk, s.cluster(), &self.key));
        let (auth, write) = match desired {
            Ok(d) => d,
            Err(e) => return self.warn(e),
        };
        if let Some(new) = write {
            let stored = {
                let _writing = WRITING.lock().unwrap_or_else(|p| p.into_inner());
                let lock = self.lock.read().unwrap_or_else(|p| p.into_inner()).clone();
                RootFiles::in_dir(&self.dir).store(&new, lock.as_ref())
            };
            if let Err(e) = stored {
                return self.warn(format!("cannot write the cluster's new root CA: {e}"));
            }
            tracing::info!(ca = %new.digest(), "the root CA rotation is done: this manager's certs/ca.crt and ca.key hold the new root");
            self.disk = new;
        }
        let current = Authority::current(&self.authority);
        if current.bundle_pem() != auth.bundle_pem()
            || current.signer().digest() != auth.signer().digest()
        {
            tracing::info!(
                signer = %auth.signer().digest(),
                roots = auth.roots().len(),
                "the cluster's root CAs changed"
            );
            Authority::replace(&self.authority, auth);
        }
        self.last_error = None;
    }

    /// This manager's own node is rotated once its certificate comes from the new root.
    async fn record_own_node(&self) {
        if !self
            .store
            .view(|s| rotation::needs_record(s, &self.node_id))
        {
            return;
        }
        let auth = Authority::current(&self.authority);
        let own = CertFiles::in_dir(&self.dir).load();
        if own.is_ok_and(|c| auth.signed_it(c.cert_der())) {
            rotation::record_rotated(&self.store, &self.proposer, &self.node_id).await;
        }
    }

    /// On the leader: the rotation done once every node is rotated.
    async fn complete(&mut self) {
        if !self.proposer.is_leader() {
            return;
        }
        let op: Result<Option<Op>, String> =
            self.store.view(|s| rotation::completion(s, &self.key));
        match op {
            Ok(Some(op)) => match self.proposer.propose(vec![op]).await {
                Ok(_) => tracing::info!(
                    "every node holds a certificate of the new root CA: the old root is no longer trusted \
                     and the join tokens pin the new one"
                ),
                Err(e) => tracing::debug!("cannot finish the CA rotation yet: {e}"),
            },
            Ok(None) => {}
            Err(e) => self.warn(e),
        }
    }

    fn warn(&mut self, e: String) {
        if self.last_error.as_ref() != Some(&e) {
            tracing::warn!("CA rotation: {e}");
            self.last_error = Some(e);
        }
    }
}
