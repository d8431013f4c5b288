//! Autolock on a manager: the one place its keys are loaded ([`open_keys`]: the data key and the CA key, opened
//! with the unlock key when autolock wrapped them); a locked manager's start ([`serve_locked`]: nothing but
//! `swarm unlock` on the control socket — no Raft, no dispatcher, no agent, so task shims keep running untouched
//! — until the right key is given); and the loop that keeps the key files wrapped as the cluster object says
//! ([`LockLoop`]: `swarm update --autolock`, `swarm unlock-key --rotate`).
//!
//! The unlock key lives in the cluster object sealed with the data key (never in plaintext on disk or in a log),
//! so every manager can wrap its own files with it. Must not: print or log a key.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::identity::{self, Identity};
use super::keyfiles::{self, RootFiles, WRITING};
use super::NodeError;
use crate::api::control::{self, lock_server::Lock};
use crate::manager::controlapi::open_unlock_key;
use crate::secrets::lock::{SharedLock, UnlockKey};
use crate::secrets::DataKey;
use crate::store::Store;

/// What every control call but `swarm unlock` gets from a locked manager.
pub const LOCKED: &str = "swarm is locked: run `swarmctl swarm unlock` and enter the unlock key";

/// Loads the manager's data key and identity (creating both on a first start), opening the files with
/// `unlock` when autolock wrapped them. The one function that reads the manager's keys.
pub fn open_keys(
    dir: &Path,
    ips: &[std::net::IpAddr],
    raft_data: &Path,
    unlock: Option<&UnlockKey>,
) -> Result<(DataKey, Identity), NodeError> {
    let key = match keyfiles::load_data_key(dir, unlock).map_err(lock_error)? {
        Some(bytes) => DataKey::from_bytes(bytes),
        None => DataKey::load_or_create_unless(dir, Some(raft_data))?,
    };
    let id = identity::init_or_load(dir, ips, raft_data, unlock)?;
    Ok((key, id))
}

fn lock_error(e: keyfiles::KeyFileError) -> NodeError {
    NodeError::Exec(e.to_string())
}

/// Writes the manager's key files — the data key and the CA key in `dir` — wrapped with `lock` (plaintext
/// without). Also what a manager that joins will call with the keys it receives.
pub fn write_keys(
    dir: &Path,
    data_key: &DataKey,
    ca: &crate::pki::RootCa,
    lock: Option<&UnlockKey>,
) -> Result<(), keyfiles::KeyFileError> {
    let data = keyfiles::data_key_file(dir);
    let root = RootFiles::in_dir(dir);
    let (bytes, pem) = (data_key.expose_bytes(), ca.key_pem());
    keyfiles::write_keys(&[(&data, &bytes), (root.key_file(), pem.as_bytes())], lock)
}

/// Serves `swarm unlock` (and the [`LOCKED`] refusal for everything else) on the control socket of the locked
/// manager in `dir` until the right key is given (returned) or `shutdown` resolves (`None`).
pub async fn serve_locked(
    dir: &Path,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<Option<UnlockKey>, NodeError> {
    tracing::warn!("{LOCKED}");
    let socket = dir.join(super::SOCKET_FILE);
    let unix = crate::transport::unix_incoming(&socket)
        .map_err(|e| NodeError::Listen(socket.display().to_string(), e))?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<UnlockKey>(1);
    let service = LockedManager {
        dir: dir.to_path_buf(),
        unlocked: tx,
    };
    let got = Arc::new(std::sync::Mutex::new(None));
    let handoff = got.clone();
    let server = tonic::transport::Server::builder()
        .add_service(control::lock_server::LockServer::new(service))
        .add_service(RefuseControl)
        .serve_with_incoming_shutdown(unix, async move {
            if let Some(k) = rx.recv().await {
                *handoff.lock().unwrap_or_else(|p| p.into_inner()) = Some(k);
            }
        });
    tokio::pin!(shutdown);
    let result = tokio::select! {
        r = server => r
            .map_err(|e| NodeError::Exec(format!("the locked control socket: {e}")))
            .map(|()| got.lock().unwrap_or_else(|p| p.into_inner()).take()),
        () = &mut shutdown => Ok(None),
    };
    let _ = std::fs::remove_file(&socket);
    result
}

/// The `Lock` service of a locked manager.
struct LockedManager {
    dir: PathBuf,
    unlocked: tokio::sync::mpsc::Sender<UnlockKey>,
}

#[tonic::async_trait]
impl Lock for LockedManager {
    async fn unlock(
        &self,
        request: tonic::Request<control::UnlockRequest>,
    ) -> Result<tonic::Response<control::Empty>, tonic::Status> {
        let key: UnlockKey =
            request
                .into_inner()
                .key
                .parse()
                .map_err(|e: crate::secrets::lock::LockError| {
                    tonic::Status::invalid_argument(e.to_string())
                })?;
        let opened = keyfiles::load_data_key(&self.dir, Some(&key))
            .and_then(|_| RootFiles::in_dir(&self.dir).load(Some(&key)).map(|_| ()));
        if let Err(e) = opened {
            tracing::warn!("unlock refused: {e}");
            return Err(tonic::Status::invalid_argument(format!(
                "invalid unlock key: {e}; the swarm stays locked"
            )));
        }
        tracing::info!("unlocked: starting");
        let _ = self.unlocked.send(key).await;
        Ok(tonic::Response::new(control::Empty {}))
    }
}

/// Every call of the control API on a locked manager: refused with [`LOCKED`].
#[derive(Clone)]
struct RefuseControl;

impl tonic::server::NamedService for RefuseControl {
    const NAME: &'static str = "swarm.control.Control";
}

impl<B> tower::Service<tonic::codegen::http::Request<B>> for RefuseControl {
    type Response = tonic::codegen::http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: tonic::codegen::http::Request<B>) -> Self::Future {
        std::future::ready(Ok(tonic::Status::failed_precondition(LOCKED).into_http()))
    }
}

/// The `Lock` service of a manager that is not locked.
pub struct NotLocked;

#[tonic::async_trait]
impl Lock for NotLocked {
    async fn unlock(
        &self,
        _: tonic::Request<control::UnlockRequest>,
    ) -> Result<tonic::Response<control::Empty>, tonic::Status> {
        Err(tonic::Status::failed_precondition(
            "this swarm is not locked",
        ))
    }
}

/// Keeps the manager's key files wrapped with the cluster object's unlock key (or unwrapped without one).
pub struct LockLoop {
    dir: PathBuf,
    store: Store,
    key: DataKey,
    lock: SharedLock,
}

impl LockLoop {
    /// The loop for the manager in `dir` whose files are wrapped with `current` now (the key it was unlocked
    /// with; `None` when they are plaintext).
    pub fn new(dir: PathBuf, store: Store, key: DataKey, current: Option<UnlockKey>) -> LockLoop {
        LockLoop {
            dir,
            store,
            key,
            lock: Arc::new(std::sync::RwLock::new(current)),
        }
    }

    /// The key the files are wrapped with now.
    pub fn shared(&self) -> SharedLock {
        self.lock.clone()
    }

    /// Runs until the process ends; the first round rewrites the files once (finishing anything a crash
    /// interrupted).
    pub async fn run(self) {
        let mut changes = self.store.subscribe();
        let mut first = true;
        let mut last_error = None;
        loop {
            match self.round(first) {
                Ok(()) => {
                    first = false;
                    last_error = None;
                }
                Err(e) if last_error.as_ref() != Some(&e) => {
                    tracing::warn!("autolock: {e}");
                    last_error = Some(e);
                }
                Err(_) => {}
            }
            let _ = tokio::time::timeout(Duration::from_secs(2), changes.changed()).await;
        }
    }

    fn round(&self, force: bool) -> Result<(), String> {
        let desired = self
            .store
            .view(|s| s.cluster().map(|c| open_unlock_key(&self.key, c)));
        let Some(desired) = desired else {
            return Ok(());
        };
        let desired = desired?;
        let _writing = WRITING.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.lock.read().unwrap_or_else(|p| p.into_inner()).clone();
        if !force && current == desired {
            return Ok(());
        }
        let ca = RootFiles::in_dir(&self.dir)
            .load(current.as_ref())
            .map_err(|e| e.to_string())?;
        write_keys(&self.dir, &self.key, &ca, desired.as_ref()).map_err(|e| e.to_string())?;
        if current != desired {
            tracing::info!(
                "autolock: data.key and certs/ca.key are {}",
                if desired.is_some() {
                    "wrapped with the unlock key"
                } else {
                    "no longer wrapped"
                }
            );
        }
        *self.lock.write().unwrap_or_else(|p| p.into_inner()) = desired;
        Ok(())
    }
}
