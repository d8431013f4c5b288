//! A worker node: a `swarmd` that joined a cluster with a token and runs tasks for its manager — no Raft, no
//! control API, no CA. Its state directory holds `worker.json` (node id, cluster id, the manager's address),
//! `certs/ca.crt`, `certs/node.crt` and `certs/node.key` (0600); a restarted worker resumes from it without a
//! token.
//!
//! Must not: hold the cluster's CA key or data key, or accept connections (it only dials its manager).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::join::{join, JoinError, Joined};
use super::parts::Parts;
use super::renew::{self, CertFiles};
use super::{describe, executor_runtime, open_executor, session, NodeConfig, NodeError};
use std::time::Duration;

use crate::agent::{StatusReport, Worker};
use crate::api::control::{
    self,
    worker_local_server::{WorkerLocal, WorkerLocalServer},
};
use crate::pki::{self, NodeCredentials};
use crate::util::{Clock, SystemClock};

/// Format version of `worker.json`.
const WORKER_FILE_VERSION: u32 = 1;

/// Where to join, for a node's first start.
#[derive(Clone, Debug)]
pub struct JoinConfig {
    /// The manager's cluster address, `host:port`.
    pub addr: String,
    /// The join token.
    pub token: String,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct WorkerFile {
    version: u32,
    pub(crate) node_id: String,
    pub(crate) cluster_id: String,
    /// The manager it joined through.
    pub(crate) manager_addr: String,
    /// Every manager's address, as the last session gave them (so a restarted worker finds a manager when the
    /// one it joined through is gone).
    #[serde(default)]
    pub(crate) managers: Vec<String>,
}

impl WorkerFile {
    /// The managers to try, the one it joined through first.
    pub(crate) fn all_managers(&self) -> Vec<String> {
        let mut all = vec![self.manager_addr.clone()];
        for m in &self.managers {
            if !all.contains(m) {
                all.push(m.clone());
            }
        }
        all
    }
}

/// Writes `worker.json` (atomically): the identity of a worker in `dir`.
pub(crate) fn write_worker_file(
    dir: &Path,
    node_id: &str,
    cluster_id: &str,
    managers: &[String],
) -> Result<(), pki::PkiError> {
    let w = WorkerFile {
        version: WORKER_FILE_VERSION,
        node_id: node_id.to_string(),
        cluster_id: cluster_id.to_string(),
        manager_addr: managers.first().cloned().unwrap_or_default(),
        managers: managers.to_vec(),
    };
    let json = serde_json::to_vec_pretty(&w).unwrap_or_default();
    pki::write_public_file(&worker_file(dir), &json)
}

/// Reads `worker.json`.
pub(crate) fn read_worker_file(dir: &Path) -> Result<WorkerFile, String> {
    let file = worker_file(dir);
    let text = std::fs::read(&file).map_err(|e| format!("{}: {e}", file.display()))?;
    let w: WorkerFile =
        serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", file.display()))?;
    if w.version != WORKER_FILE_VERSION {
        return Err(format!(
            "{}: unsupported format version {} (this swarmd reads {WORKER_FILE_VERSION})",
            file.display(),
            w.version
        ));
    }
    Ok(w)
}

/// How a worker's run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Shut down, or left the swarm.
    Stopped,
    /// The managers promoted it: it becomes a manager.
    Promoted,
}

/// The identity file of a worker's state directory.
pub fn worker_file(dir: &Path) -> PathBuf {
    dir.join("worker.json")
}

/// Whether `dir` is a worker's state directory.
pub fn is_worker_dir(dir: &Path) -> bool {
    worker_file(dir).exists()
}

/// Why a worker could not start.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The join failed.
    #[error("cannot join the cluster: {0}")]
    Join(#[from] JoinError),
    /// A file of the state directory.
    #[error("{}: {message}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Key or certificate handling.
    #[error(transparent)]
    Pki(#[from] pki::PkiError),
}

fn file_error(path: &Path) -> impl Fn(String) -> WorkerError + '_ {
    move |message| WorkerError::File {
        path: path.to_path_buf(),
        message,
    }
}

/// The worker's identity: loaded, or (first start) obtained by joining with `join`.
async fn load_or_join(
    dir: &Path,
    join_config: Option<&JoinConfig>,
    joined: Option<Joined>,
) -> Result<(WorkerFile, String, NodeCredentials), WorkerError> {
    let certs = dir.join("certs");
    let (ca_crt, node_crt) = (certs.join("ca.crt"), certs.join("node.crt"));
    let file = worker_file(dir);
    if file.exists() {
        if join_config.is_some() {
            tracing::info!(
                "this node already joined its cluster: --join-addr/--join-token are ignored"
            );
        }
        let w = read_worker_file(dir).map_err(|e| file_error(&file)(e))?;
        let read = |p: &Path| std::fs::read_to_string(p).map_err(|e| file_error(p)(e.to_string()));
        let ca_pem = read(&ca_crt)?;
        let creds = CertFiles::in_dir(dir)
            .load()
            .map_err(|e| file_error(&node_crt)(e))?;
        if !renew::expired(&creds) {
            return Ok((w, ca_pem, creds));
        }
        // offline past its certificate's life: rejoin with a token rather than stay stuck
        if join_config.is_none() {
            return Err(file_error(&node_crt)(format!(
                "this node's certificate expired (it was offline too long to renew it): start swarmd with \
                 --join-addr {} --join-token TOKEN to rejoin the cluster",
                w.manager_addr
            )));
        }
        tracing::warn!("this node's certificate expired: rejoining with the token");
    }
    let Some(j) = join_config else {
        return Err(file_error(&file)(
            "missing: this is not a worker's state directory".into(),
        ));
    };
    let joined = match joined {
        Some(joined) => joined,
        None => join(&j.addr, &j.token).await?,
    };
    let id = joined.creds.identity().clone();
    std::fs::create_dir_all(&certs).map_err(|e| file_error(&certs)(e.to_string()))?;
    pki::write_public_file(&ca_crt, joined.ca_pem.as_bytes())?;
    CertFiles::in_dir(dir).store(&joined.creds)?;
    let w = WorkerFile {
        version: WORKER_FILE_VERSION,
        node_id: id.node_id.clone(),
        cluster_id: id.cluster_id.clone(),
        manager_addr: j.addr.clone(),
        managers: Vec::new(),
    };
    // written last: its presence means the directory holds a complete identity
    let json = serde_json::to_vec_pretty(&w).unwrap_or_default();
    pki::write_public_file(&file, &json)?;
    println!(
        "This node joined a swarm as a worker (node {}, cluster {}).",
        w.node_id, w.cluster_id
    );
    Ok((w, joined.ca_pem, joined.creds))
}

/// Runs a worker node until `shutdown` resolves (tasks keep running after it returns); `joined` is the join a
/// first start already made (the token's role is only known once the CA answered).
pub(crate) async fn run(
    config: NodeConfig,
    joined: Option<Joined>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<Outcome, NodeError> {
    crate::pki::install_crypto_provider();
    let dir = config.state_dir.clone();
    super::prepare_state_dir(&dir)?;
    if super::identity::exists(&dir) {
        return Err(NodeError::Exec(format!(
            "{} holds a manager's identity: a manager cannot join another cluster (use a new state directory)",
            dir.display()
        )));
    }
    let (file, ca_pem, creds) = load_or_join(&dir, config.join.as_ref(), joined)
        .await
        .map_err(|e| match e {
            WorkerError::Join(j) => NodeError::Join(j.to_string()),
            other => NodeError::Worker(other.to_string()),
        })?;
    tracing::info!(node = %file.node_id, cluster = %file.cluster_id, manager = %file.manager_addr, "worker identity ready");
    let ca = pki::certs_from_pem(&ca_pem, "certs/ca.crt")?;
    let net = super::netplane::NodeNetwork::new(config.listen_addr, config.task_networks);
    let executor = open_executor(&config, &net).await?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let exec_rt = executor_runtime()?;
    let (reports_tx, reports_rx) = tokio::sync::mpsc::unbounded_channel::<StatusReport>();
    let worker = Arc::new({
        let w = Worker::new(executor, clock, reports_tx)
            .on_runtime(exec_rt.handle())
            .with_start_parallelism(config.start_parallelism)
            .with_drain_delay(net.drain_delay(config.drain_delay));
        match net.agent_sender() {
            Some(tx) => w.with_network_maps(tx),
            None => w,
        }
    });
    let tls: renew::ClientTls = Arc::new(std::sync::RwLock::new(pki::client_config(&ca, &creds)?));
    // `swarm leave` on the local socket: stop the tasks, forget the identity, stop swarmd
    let (left_tx, left_rx) = tokio::sync::oneshot::channel::<()>();
    let socket = dir.join(super::SOCKET_FILE);
    let unix = crate::transport::unix_incoming(&socket)
        .map_err(|e| NodeError::Listen(socket.display().to_string(), e))?;
    let local = Local {
        worker: worker.clone(),
        dir: dir.clone(),
        left: std::sync::Mutex::new(Some(left_tx)),
    };
    let (role_tx, mut role_rx) = tokio::sync::watch::channel(String::new());
    let managers = session::ManagerList::new(file.all_managers());
    let session = session::run(
        session::SessionConfig {
            managers: managers.clone(),
            tls: tls.clone(),
            description: describe(&config),
            cluster_id: file.cluster_id.clone(),
            role: Some(role_tx),
        },
        worker,
        reports_rx,
    );
    let mut parts = Parts::new();
    net.spawn(&mut parts, &file.node_id);
    parts.spawn_until_shutdown("the local socket", async move {
        tonic::transport::Server::builder()
            .add_service(WorkerLocalServer::new(local))
            .serve_with_incoming(unix)
            .await
            .map_err(|e| e.to_string())
    });
    let renewal = renew::renew_forever(
        managers.clone(),
        file.cluster_id.clone(),
        dir.join("certs").join("ca.crt"),
        ca_pem,
        CertFiles::in_dir(&dir),
        tls,
        creds,
    );
    parts.spawn_until_shutdown("the certificate renewal", async move {
        renewal.await;
        Ok(())
    });
    parts.spawn_until_shutdown("the agent session", async move {
        session.await;
        Ok(())
    });
    {
        // the managers the sessions learn, kept for the next start
        let (dir, node_id, cluster_id) =
            (dir.clone(), file.node_id.clone(), file.cluster_id.clone());
        let mut known = file.all_managers();
        parts.spawn_until_shutdown("the manager list", async move {
            loop {
                tokio::time::sleep(Duration::from_secs(2)).await;
                let now = managers.addrs();
                if now != known && !now.is_empty() && worker_file(&dir).exists() {
                    if let Err(e) = write_worker_file(&dir, &node_id, &cluster_id, &now) {
                        tracing::warn!("cannot record the managers' addresses: {e}");
                    }
                    known = now;
                }
            }
        });
    }
    tracing::info!(manager = %file.manager_addr, "swarmd (worker) ready");
    let promoted = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = promoted.clone();
    let stop = async move {
        let promotion = async {
            while role_rx.changed().await.is_ok() {
                if *role_rx.borrow_and_update() == "manager" {
                    return;
                }
            }
            std::future::pending::<()>().await
        };
        tokio::select! {
            () = shutdown => {}
            _ = left_rx => tracing::info!("this node left the swarm"),
            () = promotion => {
                tracing::info!("this node was promoted to a manager");
                flag.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
    };
    let result = parts.run(stop).await;
    let _ = std::fs::remove_file(&socket);
    drop(exec_rt);
    result.map_err(NodeError::from)?;
    Ok(if promoted.load(std::sync::atomic::Ordering::SeqCst) {
        Outcome::Promoted
    } else {
        Outcome::Stopped
    })
}

/// The worker's local socket service.
struct Local {
    worker: Arc<Worker>,
    dir: PathBuf,
    left: std::sync::Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
}

#[tonic::async_trait]
impl WorkerLocal for Local {
    async fn leave(
        &self,
        _: tonic::Request<control::Empty>,
    ) -> Result<tonic::Response<control::Empty>, tonic::Status> {
        // stop every task for good (the manager's assignments are ignored from now on) and wait for them
        if !self.worker.stop_all(Duration::from_secs(60)).await {
            return Err(tonic::Status::unavailable(
                "some tasks did not stop within 60s: try again",
            ));
        }
        // forget the identity: worker.json first (the directory is no longer a worker's), then the keys
        let certs = self.dir.join("certs");
        for f in [
            worker_file(&self.dir),
            certs.join("node.key"),
            certs.join("node.crt"),
            certs.join("ca.crt"),
        ] {
            let _ = std::fs::remove_file(f);
        }
        if let Some(tx) = self.left.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = tx.send(());
        }
        Ok(tonic::Response::new(control::Empty {}))
    }
}
