//! `swarmd` wiring: `run(config, shutdown)` brings up one node — identity and certificates, the data key, the
//! Raft-backed store, the control API (unix socket), the dispatcher (mutual TLS), the reconcile driver (while
//! leader) and the agent with its executor — and stops it when `shutdown` resolves. Tests start several.
//! Each running piece is a named part of one [`parts::Parts`] set: a part that dies (a fatal Raft error, a
//! listener error) stops the whole node with an error naming it. The `info` document is built in [`info`].
//!
//! Must not: hold logic of its own beyond putting the pieces together.

pub mod identity;
pub mod info;
pub mod join;
pub mod keyfiles;
pub mod limits;
pub mod lock;
pub mod parts;
pub mod renew;
pub mod rotation;
pub mod session;
mod session_logs;
#[cfg(test)]
mod session_tests;
pub mod worker;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use crate::agent::{StatusReport, Worker};
use crate::api::dispatcher::node_ca_server::NodeCaServer;
use crate::api::{
    control::control_server::ControlServer, dispatcher as pb,
    dispatcher::dispatcher_server::DispatcherServer,
};
use crate::exec::process::{ProcessExecutor, ShimCommand};
use crate::exec::{Executor, LogOptions, LogStream};
use crate::manager::ca::CaService;
use crate::manager::controlapi::{
    open_tokens, seal_tokens, ControlApi, TaskLogLine, TaskLogStream, TaskLogs,
};
use crate::manager::dispatcher::Dispatcher;
use crate::manager::driver::Driver;
use crate::manager::proposer::Proposer;
use crate::model::limits::MAX_MESSAGE_BYTES;
use crate::pki::{JoinTokens, NodeRole};
use crate::secrets::DataKey;
use crate::store::raft::{RaftNode, RaftSettings};
use crate::store::{Op, Store, StoreStateMachine};
use crate::util::{Clock, RandomIds, SystemClock};
use parts::Parts;

/// Which task runtime to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExecutorKind {
    /// Local processes (the embedded default).
    Process,
    /// Docker containers.
    Docker,
}

/// How to run a node.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// State directory (created if missing).
    pub state_dir: PathBuf,
    /// Hostname reported for the node.
    pub hostname: String,
    /// Address of the cluster (dispatcher/Raft) API.
    pub listen_addr: SocketAddr,
    /// Task runtime.
    pub executor: ExecutorKind,
    /// Heartbeat period of agents.
    pub heartbeat_period: Duration,
    /// Raft settings.
    pub raft: RaftSettings,
    /// Join this cluster on the first start (a worker); `None` for a manager.
    pub join: Option<worker::JoinConfig>,
}

impl NodeConfig {
    /// Defaults for a node in `state_dir` listening on `listen_addr`.
    pub fn new(state_dir: PathBuf, listen_addr: SocketAddr) -> Self {
        NodeConfig {
            state_dir,
            hostname: hostname(),
            listen_addr,
            executor: ExecutorKind::Process,
            heartbeat_period: Duration::from_secs(5),
            raft: RaftSettings::default(),
            join: None,
        }
    }
}

/// The machine's hostname.
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// State directory problems.
    #[error("state directory {0}: {1}")]
    StateDir(PathBuf, std::io::Error),
    /// Identity or certificates.
    #[error(transparent)]
    Identity(#[from] identity::IdentityError),
    /// Secrets key.
    #[error(transparent)]
    Secrets(#[from] crate::secrets::SecretsError),
    /// Raft.
    #[error("raft: {0}")]
    Raft(#[from] crate::store::raft::Error),
    /// TLS setup.
    #[error(transparent)]
    Pki(#[from] crate::pki::PkiError),
    /// Executor setup.
    #[error("executor: {0}")]
    Exec(String),
    /// A listener could not be opened.
    #[error("cannot listen on {0}: {1}")]
    Listen(String, std::io::Error),
    /// A part of the running node died (a fatal Raft error, a listener error): the node stopped.
    #[error(transparent)]
    Part(#[from] parts::PartFailed),
    /// The identity says this node belongs to a cluster, but its Raft data is gone.
    #[error(
        "{} is missing, but {} says this node already belongs to a cluster: refusing to start an empty \
         cluster in its place (the agent would stop every task). Restore the raft/ directory from a backup or \
         from another manager, or move the state directory away to start a new cluster",
        path.display(), identity.display()
    )]
    RaftDataMissing {
        /// The missing Raft database.
        path: PathBuf,
        /// The identity file that exists.
        identity: PathBuf,
    },
}

/// The Raft state directory inside the node's state directory.
fn raft_dir(config: &NodeConfig) -> PathBuf {
    config.state_dir.join("raft")
}

/// `service logs` on a manager: tasks of this node from its own executor, tasks of other nodes through the
/// dispatcher's log broker.
struct RoutedLogs {
    local_node: String,
    worker: Arc<Worker>,
    broker: crate::manager::dispatcher::LogBroker,
}

impl TaskLogs for RoutedLogs {
    fn logs(
        &self,
        node_id: String,
        task_id: String,
        tail: Option<usize>,
        follow: bool,
    ) -> futures::future::BoxFuture<'static, Result<TaskLogStream, String>> {
        if node_id != self.local_node {
            let broker = self.broker.clone();
            return Box::pin(async move { broker.request(&node_id, &task_id, tail, follow).await });
        }
        let worker = self.worker.clone();
        Box::pin(async move {
            let lines = worker
                .logs(&task_id, LogOptions { tail, follow })
                .await
                .map_err(|e| e.to_string())?;
            let stream: TaskLogStream = Box::pin(lines.filter_map(|l| async move {
                l.ok().map(|l| TaskLogLine {
                    stream: match l.stream {
                        LogStream::Stdout => "stdout".into(),
                        LogStream::Stderr => "stderr".into(),
                    },
                    line: l.line,
                })
            }));
            Ok(stream)
        })
    }
}

/// Runs a node until `shutdown` resolves. Tasks keep running after it returns (they outlive the daemon). Fails
/// if the node cannot start, or with [`NodeError::Part`] when one of its parts dies.
pub async fn run(
    config: NodeConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), NodeError> {
    limits::raise_open_files_logged();
    if config.join.is_some() || worker::is_worker_dir(&config.state_dir) {
        return worker::run(config, shutdown).await;
    }
    let executor = open_executor(&config).await?;
    run_with_executor(config, executor, shutdown).await
}

pub(crate) async fn open_executor(config: &NodeConfig) -> Result<Arc<dyn Executor>, NodeError> {
    let dir = &config.state_dir;
    Ok(match config.executor {
        ExecutorKind::Process => {
            let shim = ShimCommand::current_exe().map_err(|e| NodeError::Exec(e.to_string()))?;
            // Absolute: the task's mount namespace covers these paths.
            let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.clone());
            let exec = ProcessExecutor::new(dir.join("tasks"), shim).hiding(dir);
            // Said once: what a task is not isolated from on this host.
            for gap in exec.isolation_gaps() {
                tracing::warn!("task isolation: {gap}");
            }
            Arc::new(exec)
        }
        #[cfg(feature = "docker")]
        ExecutorKind::Docker => Arc::new(
            crate::exec::docker::DockerExecutor::connect(dir.join("docker"))
                .await
                .map_err(|e| match e {
                    crate::exec::ExecError::Unavailable(m) => NodeError::Exec(m),
                    e => NodeError::Exec(e.to_string()),
                })?,
        ),
        #[cfg(not(feature = "docker"))]
        ExecutorKind::Docker => {
            return Err(NodeError::Exec(
                "this swarmd was built without the docker feature: use --executor process".into(),
            ))
        }
    })
}

/// The control socket's file name in the state directory.
pub const SOCKET_FILE: &str = "swarmd.sock";

/// Creates the state directory (mode 0700: it holds keys) if it is missing.
pub(crate) fn prepare_state_dir(dir: &std::path::Path) -> Result<(), NodeError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).map_err(|e| NodeError::StateDir(dir.to_path_buf(), e))?;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    Ok(())
}

/// Like [`run`], with the given task runtime (tests pass their own).
pub async fn run_with_executor(
    config: NodeConfig,
    executor: Arc<dyn Executor>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), NodeError> {
    crate::pki::install_crypto_provider();
    let dir = config.state_dir.clone();
    prepare_state_dir(&dir)?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let ips: Vec<IpAddr> = vec![
        config.listen_addr.ip(),
        "127.0.0.1".parse().unwrap_or(config.listen_addr.ip()),
    ];
    // Raft data is created last on a first start: while it exists, a missing data key or identity is refused
    // rather than re-created over it, and missing Raft data is refused once an identity exists (an empty store
    // would make the agent stop every task). All three are checked before anything is written.
    let raft_data = crate::store::raft::database_file(&raft_dir(&config));
    if identity::exists(&dir) && !raft_data.exists() {
        return Err(NodeError::RaftDataMissing {
            path: raft_data,
            identity: identity::node_file(&dir),
        });
    }
    // autolock: a manager whose key files are wrapped serves nothing but `swarm unlock` until it gets the key
    tokio::pin!(shutdown);
    let unlock = if keyfiles::is_locked(&dir) {
        match lock::serve_locked(&dir, &mut shutdown).await? {
            Some(key) => Some(key),
            None => return Ok(()),
        }
    } else {
        None
    };
    let (key, id) = lock::open_keys(&dir, &ips, &raft_data, unlock.as_ref())?;
    tracing::info!(node = %id.node_id, cluster = %id.cluster_id, new = id.new_cluster, "node identity ready");
    let (store, raft, proposer) = open_store(&config, &id, &key, clock.clone()).await?;
    let mut parts = Parts::new();
    {
        let raft = raft.clone();
        let shutdown = parts.shutdown();
        parts.spawn("the raft node", async move {
            tokio::select! {
                e = raft.stopped() => Err(e.to_string()),
                _ = shutdown.wait() => Ok(()),
            }
        });
    }

    // the agent and its executor; task runners get a runtime of their own (see `executor_runtime`)
    let exec_rt = executor_runtime()?;
    let (reports_tx, reports_rx) = tokio::sync::mpsc::unbounded_channel::<StatusReport>();
    let worker =
        Arc::new(Worker::new(executor, clock.clone(), reports_tx).on_runtime(exec_rt.handle()));

    // servers
    let dispatcher = Dispatcher::new(
        store.clone(),
        proposer.clone(),
        key.clone(),
        config.heartbeat_period,
    );
    // the key files wrapped as the cluster object's autolock says
    let lock_loop = lock::LockLoop::new(dir.clone(), store.clone(), key.clone(), unlock);
    let wrapped_with = lock_loop.shared();
    parts.spawn_until_shutdown("the autolock", async move {
        lock_loop.run().await;
        Ok(())
    });
    // the root CA this manager signs and trusts with, following the cluster object's rotation
    let rotation = rotation::RotationLoop::new(
        dir.clone(),
        store.clone(),
        proposer.clone(),
        key.clone(),
        id.ca.clone(),
        id.node_id.clone(),
        wrapped_with.clone(),
    );
    let authority = rotation.authority();
    parts.spawn_until_shutdown("the CA rotation", async move {
        rotation.run().await;
        Ok(())
    });
    let control = ControlApi::new(
        store.clone(),
        proposer.clone(),
        key.clone(),
        Arc::new(RoutedLogs {
            local_node: id.node_id.clone(),
            worker: worker.clone(),
            broker: dispatcher.log_broker(),
        }),
        info::info_fn(
            store.clone(),
            raft.clone(),
            id.node_id.clone(),
            id.cluster_id.clone(),
        ),
    )
    .with_join_addr(config.listen_addr.to_string())
    .with_ca(authority.clone())
    .with_lock(wrapped_with);
    let control = Arc::new(control);
    if id.new_cluster {
        print_init_message(&store, &key, &id.node_id, &config.listen_addr.to_string());
    }
    let socket = dir.join(SOCKET_FILE);
    let unix = crate::transport::unix_incoming(&socket)
        .map_err(|e| NodeError::Listen(socket.display().to_string(), e))?;
    let unix_control = control.clone();
    parts.spawn_until_shutdown("the control API", async move {
        tonic::transport::Server::builder()
            .add_service(
                ControlServer::from_arc(unix_control).max_decoding_message_size(MAX_MESSAGE_BYTES),
            )
            .add_service(crate::api::control::lock_server::LockServer::new(
                lock::NotLocked,
            ))
            .serve_with_incoming(unix)
            .await
            .map_err(|e| e.to_string())
    });

    // the cluster port: the dispatcher (node certificates only) and the CA (joining nodes, with a token)
    let roots = crate::pki::Authority::current(&authority).roots().to_vec();
    let server_tls: crate::transport::ServerTls = Arc::new(std::sync::RwLock::new(
        crate::pki::server_config_allowing_joins(&roots, &id.creds)?,
    ));
    let ca_service = CaService::new(
        store.clone(),
        proposer.clone(),
        key.clone(),
        authority.clone(),
    );
    let listener = tokio::net::TcpListener::bind(config.listen_addr)
        .await
        .map_err(|e| NodeError::Listen(config.listen_addr.to_string(), e))?;
    let dispatcher_server = tonic::transport::Server::builder()
        .add_service(
            DispatcherServer::new(dispatcher.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(NodeCaServer::new(ca_service))
        // the control API over TCP, for client certificates (`swarm ca --issue-client`) and managers only
        .add_service(tonic::service::interceptor::InterceptedService::new(
            ControlServer::from_arc(control).max_decoding_message_size(MAX_MESSAGE_BYTES),
            crate::manager::controlapi::admin_only,
        ))
        .serve_with_incoming(crate::transport::tls_incoming(listener, server_tls.clone()));
    parts.spawn_until_shutdown("the dispatcher API", async move {
        dispatcher_server.await.map_err(|e| e.to_string())
    });

    // leader-only loops
    let driver = Driver::new(store.clone(), proposer.clone(), Box::new(RandomIds));
    parts.spawn_until_shutdown("the driver", async move {
        driver.run().await;
        Ok(())
    });
    parts.spawn_until_shutdown("the heartbeat monitor", async move {
        dispatcher.watch_heartbeats().await;
        Ok(())
    });

    // the agent's session with the (local) dispatcher
    let client_tls: renew::ClientTls = Arc::new(std::sync::RwLock::new(crate::pki::client_config(
        &roots, &id.creds,
    )?));
    {
        // this manager's own certificate, renewed from the cluster's CA for the cluster's lifetime
        let (store, node_id) = (store.clone(), id.node_id.clone());
        let renewal = renew::renew_own_forever(
            renew::CertFiles::in_dir(&dir),
            authority.clone(),
            server_tls,
            client_tls.clone(),
            id.creds.clone(),
            move || store.view(|s| s.cert_lifetime()),
            move |ca, validity| {
                identity::issue(ca, &node_id, &ips, std::time::SystemTime::now(), validity)
                    .map_err(|e| e.to_string())
            },
        );
        parts.spawn_until_shutdown("the certificate renewal", async move {
            renewal.await;
            Ok(())
        });
    }
    let session = session::run(
        session::SessionConfig {
            addr: config.listen_addr.to_string(),
            tls: client_tls,
            description: describe(&config),
            cluster_id: id.cluster_id.clone(),
        },
        worker.clone(),
        reports_rx,
    );
    parts.spawn_until_shutdown("the agent session", async move {
        session.await;
        Ok(())
    });

    tracing::info!(socket = %socket.display(), listen = %config.listen_addr, "swarmd ready");
    let result = parts.run(shutdown).await;
    let _ = std::fs::remove_file(&socket);
    let _ = raft.shutdown().await;
    drop(exec_rt);
    result.map_err(NodeError::from)
}

/// The runtime the task runners run on: starting a task writes files, spawns processes and waits on disks, so
/// a burst of starts (a stack of 2,000 services) must not occupy the threads that answer heartbeats and
/// apply Raft entries.
pub(crate) fn executor_runtime() -> Result<ExecRuntime, NodeError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("swarm-exec")
        .enable_all()
        .build()
        .map(|rt| ExecRuntime(Some(rt)))
        .map_err(|e| NodeError::Exec(format!("cannot start the executor's runtime: {e}")))
}

/// The executor's runtime; dropped (also on an early error return, inside the async caller) without waiting:
/// tasks outlive the daemon, so their runners are abandoned, not awaited.
pub(crate) struct ExecRuntime(Option<tokio::runtime::Runtime>);

impl ExecRuntime {
    pub(crate) fn handle(&self) -> tokio::runtime::Handle {
        match &self.0 {
            Some(rt) => rt.handle().clone(),
            None => tokio::runtime::Handle::current(),
        }
    }
}

impl Drop for ExecRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// Opens the Raft-backed store (a new single-voter cluster, or the one in the state directory) and creates the
/// cluster object on first start.
async fn open_store(
    config: &NodeConfig,
    id: &identity::Identity,
    key: &DataKey,
    clock: Arc<dyn Clock>,
) -> Result<(Store, Arc<RaftNode>, Proposer), NodeError> {
    let store = Store::default();
    let machine = StoreStateMachine::new(store.clone());
    let raft = Arc::new(
        RaftNode::open(
            &raft_dir(config),
            id.raft_id,
            config.listen_addr.to_string(),
            Box::new(machine),
            config.raft.clone(),
        )
        .await?,
    );
    raft.initialize_single().await?;
    raft.wait_for_leader(Duration::from_secs(30)).await?;
    let proposer = Proposer::new(raft.clone(), clock);
    let tokens = || seal_tokens(key, &JoinTokens::generate(id.ca.digest(), &mut rand::rng()));
    match store.view(|s| s.cluster().cloned()) {
        None => {
            let cluster = crate::model::Cluster {
                id: id.cluster_id.clone(),
                meta: Default::default(),
                settings: crate::model::ClusterSettings {
                    snapshot_interval: config.raft.snapshot_interval_entries,
                    heartbeat_period_ms: config.heartbeat_period.as_millis() as u64,
                    ..Default::default()
                },
                join_tokens: tokens(),
                removed_nodes: Vec::new(),
                ca_rotation: None,
                unlock_key: Default::default(),
            };
            if let Err(e) = proposer.propose(vec![Op::CreateCluster(cluster)]).await {
                tracing::warn!("cannot create the cluster object: {e}");
            }
        }
        // a cluster created before join tokens were stored gets them now
        Some(cluster) if cluster.join_tokens.0.is_empty() => {
            let updated = crate::model::Cluster {
                join_tokens: tokens(),
                ..cluster.clone()
            };
            let op = Op::UpdateCluster {
                cluster: updated,
                expected_version: cluster.meta.version,
            };
            if let Err(e) = proposer.propose(vec![op]).await {
                tracing::warn!("cannot add join tokens to the cluster object: {e}");
            }
        }
        Some(_) => {}
    }
    Ok((store, raft, proposer))
}

/// What `docker swarm init` prints, on standard output (never in the log, which must not hold a token): this
/// node's id and the command that adds a worker.
fn print_init_message(store: &Store, key: &DataKey, node_id: &str, join_addr: &str) {
    let Some(Ok(tokens)) = store.view(|s| s.cluster().map(|c| open_tokens(key, c))) else {
        return;
    };
    println!(
        "Swarm initialized: current node ({node_id}) is now a manager.\n\nTo add a worker to this swarm, run the \
         following command:\n\n    swarmd --join-addr {join_addr} --join-token {}\n\nTo add a manager to this swarm, \
         run 'swarmctl swarm join-token manager' and follow the instructions.\n",
        tokens.token(NodeRole::Worker)
    );
}

/// This node's description for the dispatcher.
pub(crate) fn describe(config: &NodeConfig) -> pb::NodeDescription {
    pb::NodeDescription {
        hostname: config.hostname.clone(),
        os: std::env::consts::OS.into(),
        arch: std::env::consts::ARCH.into(),
        nano_cpus: std::thread::available_parallelism()
            .map(|n| n.get() as i64 * 1_000_000_000)
            .unwrap_or(0),
        memory_bytes: memory_bytes(),
        engine_labels: Default::default(),
        addr: config.listen_addr.ip().to_string(),
    }
}

fn memory_bytes() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| {
                    l.split_whitespace()
                        .nth(1)
                        .and_then(|kb| kb.parse::<u64>().ok())
                })
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}
