//! `swarmd` wiring: `run(config, shutdown)` brings up one node — identity and certificates, the data key, the
//! Raft-backed store, the control API (unix socket), the dispatcher (mutual TLS), the reconcile driver (while
//! leader) and the agent with its executor — and stops it when `shutdown` resolves. Tests start several.
//! Each running piece is a named part of one [`parts::Parts`] set: a part that dies (a fatal Raft error, a
//! listener error) stops the whole node with an error naming it. The `info` document is built in [`info`].
//!
//! Must not: hold logic of its own beyond putting the pieces together.

mod bootstrap;
mod executor;
pub mod identity;
pub mod info;
pub mod join;
pub mod keyfiles;
pub mod limits;
pub mod lock;
mod logs;
mod manager_join;
pub mod managers;
pub mod netplane;
pub mod parts;
mod raft_transport;
pub mod renew;
pub mod rotation;
pub mod session;
mod session_logs;
#[cfg(test)]
mod session_tests;
mod transition;
pub mod worker;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::agent::{StatusReport, Worker};
use crate::api::dispatcher::node_ca_server::NodeCaServer;
use crate::api::raft::raft_peer_server::RaftPeerServer;
use crate::api::{
    control::control_server::ControlServer, dispatcher as pb,
    dispatcher::dispatcher_server::DispatcherServer,
};
use crate::exec::Executor;
use crate::manager::ca::CaService;
use crate::manager::controlapi::ControlApi;
use crate::manager::dispatcher::Dispatcher;
use crate::manager::driver::Driver;
use crate::manager::forward::Forward;
use crate::manager::raftpeer::RaftPeerService;
use crate::model::limits::MAX_MESSAGE_BYTES;
use crate::pki::NodeRole;
use crate::store::raft::RaftSettings;
use crate::util::{Clock, RandomIds, SystemClock};
use executor::open_executor;
pub use executor::ExecutorKind;
use parts::Parts;

/// How to run a node.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// State directory (created if missing).
    pub state_dir: PathBuf,
    /// Hostname reported for the node.
    pub hostname: String,
    /// Address of the cluster (dispatcher/Raft) API.
    pub listen_addr: SocketAddr,
    /// Task runtimes, the default first (each task runs on the one its `com.swarm.executor` label names).
    pub executors: Vec<ExecutorKind>,
    /// Heartbeat period of agents.
    pub heartbeat_period: Duration,
    /// How many tasks this node's agent starts at once.
    pub start_parallelism: usize,
    /// Tasks get network namespaces, addresses, service names and the mesh (when root); false keeps every
    /// task on the host's network.
    pub task_networks: bool,
    /// How long a task that receives connections keeps running after its stop was asked, before its stop
    /// signal (`--drain-delay`; zero turns draining off; only where the node serves connections).
    pub drain_delay: Duration,
    /// Raft settings.
    pub raft: RaftSettings,
    /// Join this cluster on the first start (a worker); `None` for a manager.
    pub join: Option<worker::JoinConfig>,
    /// Restart this manager as the only member of its Raft group, keeping its state (recovery after the loss
    /// of quorum).
    pub force_new_cluster: bool,
    /// The pools network subnets are allocated from, for a new cluster (`--default-addr-pool`).
    pub default_addr_pool: Vec<String>,
    /// The size of each allocated subnet, for a new cluster (`--default-addr-pool-mask-length`).
    pub default_addr_pool_mask_len: u8,
}

impl NodeConfig {
    /// Defaults for a node in `state_dir` listening on `listen_addr`.
    pub fn new(state_dir: PathBuf, listen_addr: SocketAddr) -> Self {
        NodeConfig {
            state_dir,
            hostname: hostname(),
            listen_addr,
            executors: vec![ExecutorKind::Process],
            heartbeat_period: Duration::from_secs(5),
            start_parallelism: crate::agent::DEFAULT_START_PARALLELISM,
            task_networks: true,
            drain_delay: crate::agent::DEFAULT_DRAIN_DELAY,
            raft: RaftSettings::default(),
            join: None,
            force_new_cluster: false,
            default_addr_pool: crate::model::default_addr_pool(),
            default_addr_pool_mask_len: crate::model::default_addr_pool_mask_len(),
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
    /// A worker's state directory.
    #[error("{0}")]
    Worker(String),
    /// Joining the cluster failed.
    #[error("cannot join the cluster: {0}")]
    Join(String),
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

/// Runs a node until `shutdown` resolves. Tasks keep running after it returns (they outlive the daemon). Fails
/// if the node cannot start, or with [`NodeError::Part`] when one of its parts dies. A node whose role the
/// managers change (`node promote` / `node demote`) goes on in its new role within this call.
pub async fn run(
    config: NodeConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), NodeError> {
    use futures::FutureExt;
    limits::raise_open_files_logged();
    let shutdown = shutdown.boxed().shared();
    let dir = config.state_dir.clone();
    transition::settle(&dir);
    let fresh = !worker::is_worker_dir(&dir) && !identity::exists(&dir);
    let mut joined_worker = None;
    match &config.join {
        // a first start with a token: the CA's answer says whether this node is a worker or a manager
        Some(j) if fresh => {
            crate::pki::install_crypto_provider();
            prepare_state_dir(&dir)?;
            let joined = join::join(&j.addr, &j.token)
                .await
                .map_err(|e| NodeError::Join(e.to_string()))?;
            if joined.creds.identity().role == NodeRole::Manager {
                let addr = j.addr.clone();
                manager_join::join_as_manager(&config, joined, &addr, &node_ips(&config)).await?;
            } else {
                joined_worker = Some(joined);
            }
        }
        Some(_) if !worker::is_worker_dir(&dir) && !fresh => tracing::info!(
            "this node already belongs to a cluster as a manager: --join-addr/--join-token are ignored"
        ),
        _ => {}
    }
    loop {
        if joined_worker.is_some() || worker::is_worker_dir(&dir) {
            match worker::run(config.clone(), joined_worker.take(), shutdown.clone()).await? {
                worker::Outcome::Stopped => return Ok(()),
                worker::Outcome::Promoted => {
                    transition::promote(&config, &node_ips(&config)).await?;
                    continue;
                }
            }
        }
        let net = netplane::NodeNetwork::new(config.listen_addr, config.task_networks);
        let executor = open_executor(&config, &net).await?;
        match run_manager(config.clone(), executor, Some(net), shutdown.clone()).await? {
            ManagerOutcome::Stopped => return Ok(()),
            ManagerOutcome::Demoted => continue,
        }
    }
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

/// Like [`run`] for a manager, with the given task runtime (tests pass their own); a demotion ends it.
pub async fn run_with_executor(
    config: NodeConfig,
    executor: Arc<dyn Executor>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), NodeError> {
    run_manager(config, executor, None, shutdown)
        .await
        .map(|_| ())
}

/// How a manager's run ended.
enum ManagerOutcome {
    Stopped,
    /// Demoted: the state directory is a worker's now.
    Demoted,
}

async fn run_manager(
    config: NodeConfig,
    executor: Arc<dyn Executor>,
    net: Option<netplane::NodeNetwork>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<ManagerOutcome, NodeError> {
    crate::pki::install_crypto_provider();
    let dir = config.state_dir.clone();
    prepare_state_dir(&dir)?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let ips = node_ips(&config);
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
            None => return Ok(ManagerOutcome::Stopped),
        }
    } else {
        None
    };
    let (key, id) = lock::open_keys(&dir, &ips, &raft_data, unlock.as_ref())?;
    tracing::info!(node = %id.node_id, cluster = %id.cluster_id, new = id.new_cluster, "node identity ready");
    // the node's TLS client configuration (Raft to the other managers, the agent session), swapped on renewal
    let client_tls: renew::ClientTls = Arc::new(std::sync::RwLock::new(crate::pki::client_config(
        &[id.ca.cert_der().clone()],
        &id.creds,
    )?));
    let transport = Arc::new(raft_transport::GrpcRaftTransport::new(
        client_tls.clone(),
        id.cluster_id.clone(),
    ));
    if config.force_new_cluster {
        bootstrap::force_new_cluster(&config, &id).await?;
    }
    let (store, raft, proposer) = bootstrap::open_store(&config, &id, transport).await?;
    let mut parts = Parts::new();
    if let Some(net) = &net {
        net.spawn(&mut parts, &id.node_id);
    }
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
    let worker = Arc::new({
        let w = Worker::new(executor, clock.clone(), reports_tx)
            .on_runtime(exec_rt.handle())
            .with_start_parallelism(config.start_parallelism)
            .with_drain_delay(
                net.as_ref()
                    .map_or(Duration::ZERO, |n| n.drain_delay(config.drain_delay)),
            );
        match net.as_ref().and_then(|n| n.agent_sender()) {
            Some(tx) => w.with_network_maps(tx),
            None => w,
        }
    });

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
    let roots = crate::pki::Authority::current(&authority).roots().to_vec();
    // the roots in use (a rotation may be under way) for every connection from now on
    *client_tls.write().unwrap_or_else(|p| p.into_inner()) =
        crate::pki::client_config(&roots, &id.creds)?;
    let control = ControlApi::new(
        store.clone(),
        proposer.clone(),
        key.clone(),
        Arc::new(logs::RoutedLogs {
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
    let route: Arc<dyn crate::manager::forward::LeaderRoute> = Arc::new(
        raft_transport::ToLeader::new(raft.clone(), client_tls.clone(), id.cluster_id.clone()),
    );
    let socket = dir.join(SOCKET_FILE);
    let unix = crate::transport::unix_incoming(&socket)
        .map_err(|e| NodeError::Listen(socket.display().to_string(), e))?;
    let unix_control = control.clone();
    let unix_route = route.clone();
    parts.spawn_until_shutdown("the control API", async move {
        tonic::transport::Server::builder()
            .add_service(Forward::new(
                ControlServer::from_arc(unix_control).max_decoding_message_size(MAX_MESSAGE_BYTES),
                unix_route,
            ))
            .add_service(crate::api::control::lock_server::LockServer::new(
                lock::NotLocked,
            ))
            .serve_with_incoming(unix)
            .await
            .map_err(|e| e.to_string())
    });

    // the cluster port: the dispatcher (node certificates only) and the CA (joining nodes, with a token)
    let server_tls: crate::transport::ServerTls = Arc::new(std::sync::RwLock::new(
        crate::pki::server_config_allowing_joins(&roots, &id.creds)?,
    ));
    let ca_service = CaService::new(
        store.clone(),
        proposer.clone(),
        key.clone(),
        authority.clone(),
    );
    let listener = bind(config.listen_addr).await?;
    let dispatcher_server = tonic::transport::Server::builder()
        .add_service(
            DispatcherServer::new(dispatcher.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(NodeCaServer::new(ca_service))
        .add_service(
            RaftPeerServer::new(RaftPeerService::new(
                raft.clone(),
                store.clone(),
                key.clone(),
                authority.clone(),
                id.cluster_id.clone(),
            ))
            .max_decoding_message_size(64 << 20),
        )
        // the control API over TCP, for client certificates (`swarm ca --issue-client`) and managers only;
        // checked before it is forwarded to the leader
        .add_service(tonic::service::interceptor::InterceptedService::new(
            Forward::new(
                ControlServer::from_arc(control).max_decoding_message_size(MAX_MESSAGE_BYTES),
                route,
            ),
            crate::manager::controlapi::admin_only,
        ))
        .serve_with_incoming(crate::transport::tls_incoming(listener, server_tls.clone()));
    parts.spawn_until_shutdown("the dispatcher API", async move {
        dispatcher_server.await.map_err(|e| e.to_string())
    });
    // the cluster object (and the first start's message) once this node knows a leader
    bootstrap::bootstrap(&config, &id, &key, &store, &raft, &proposer).await;
    {
        let (raft, store) = (raft.clone(), store.clone());
        parts.spawn_until_shutdown("the raft membership", async move {
            crate::manager::raftpeer::membership_loop(raft, store).await;
            Ok(())
        });
    }

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

    // the agent's session with the leader's dispatcher (this node's first)
    {
        // this manager's own certificate, renewed from its own CA for the cluster's lifetime
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
            managers: session::ManagerList::new(vec![config.listen_addr.to_string()]),
            tls: client_tls,
            description: pb::NodeDescription {
                raft_id: id.raft_id,
                ..describe(&config)
            },
            cluster_id: id.cluster_id.clone(),
            role: None,
        },
        worker.clone(),
        reports_rx,
    );
    parts.spawn_until_shutdown("the agent session", async move {
        session.await;
        Ok(())
    });

    tracing::info!(socket = %socket.display(), listen = %config.listen_addr, "swarmd ready");
    let demoted = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop = {
        let (flag, store, raft, node_id) = (
            demoted.clone(),
            store.clone(),
            raft.clone(),
            id.node_id.clone(),
        );
        async move {
            tokio::select! {
                () = shutdown => {}
                () = transition::demotion(store, raft, node_id) => flag.store(true, std::sync::atomic::Ordering::SeqCst),
            }
        }
    };
    let result = parts.run(stop).await;
    let _ = std::fs::remove_file(&socket);
    let others: Vec<String> = raft
        .member_addrs()
        .into_iter()
        .filter(|(r, _)| *r != id.raft_id)
        .map(|(_, a)| a)
        .collect();
    let _ = raft.shutdown().await;
    drop(exec_rt);
    result.map_err(NodeError::from)?;
    if !demoted.load(std::sync::atomic::Ordering::SeqCst) {
        return Ok(ManagerOutcome::Stopped);
    }
    drop(raft);
    transition::demote(&config, &id, &others)?;
    Ok(ManagerOutcome::Demoted)
}

/// The cluster port's listener; a port still held for a moment (this process changing role) is retried for a
/// few seconds.
async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, NodeError> {
    let mut tries = 0;
    loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => return Ok(l),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && tries < 50 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(NodeError::Listen(addr.to_string(), e)),
        }
    }
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

/// The addresses this node's certificate names.
fn node_ips(config: &NodeConfig) -> Vec<IpAddr> {
    vec![
        config.listen_addr.ip(),
        "127.0.0.1".parse().unwrap_or(config.listen_addr.ip()),
    ]
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
        raft_id: 0,
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
