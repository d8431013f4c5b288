//! `swarmd`: the node daemon. Parses arguments and hands over to `swarm::node::run`; nothing else.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

/// swarmd — a swarm node: manager (Raft store, reconcilers, dispatcher) and worker (agent, executor).
#[derive(Parser, Debug)]
#[command(name = "swarmd", version, about)]
struct Args {
    /// State directory: an empty one initializes a new cluster, an existing one resumes.
    #[arg(long, env = "SWARMD_STATE_DIR", default_value = swarm::cli::client::DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// Node hostname (default: the machine's).
    #[arg(long)]
    hostname: Option<String>,
    /// Address of the cluster API (dispatcher, Raft), mutual TLS.
    #[arg(long, default_value = "127.0.0.1:4242")]
    listen_addr: SocketAddr,
    /// Task runtimes, comma-separated: the embedded process executor, Docker, or both (`process,docker`). The
    /// first runs every task; a service picks another with the label `com.swarm.executor: docker` (in its
    /// `deploy.labels` or its `labels`).
    #[arg(long, default_value = "process", value_delimiter = ',', value_parser = ["process", "docker"])]
    executor: Vec<String>,
    /// How often agents heartbeat (e.g. 5s).
    #[arg(long, default_value = "5s")]
    heartbeat_period: String,
    /// How many tasks the node's agent creates and starts at once (each reports as soon as it runs).
    #[arg(long, default_value_t = swarm::agent::DEFAULT_START_PARALLELISM)]
    exec_parallelism: usize,
    /// Keep every task on the host's network: no namespace, address, service names or routing mesh of its own
    /// (what a non-root swarmd does anyway).
    #[arg(long)]
    no_task_networks: bool,
    /// How long a task that receives connections (through a service name, a VIP or a published port) keeps
    /// running after its stop was asked, before its stop signal: the time for every node to stop sending it
    /// clients (e.g. 2s; 0 stops at once).
    #[arg(long, default_value = "2s")]
    drain_delay: String,
    /// Raft log entries between snapshots.
    #[arg(long, default_value_t = 10_000)]
    snapshot_interval: u64,
    /// Writes are refused ("no space left on ...") while less than this is free on the state directory's
    /// filesystem (e.g. 64MiB, 1GiB; 0 turns the check off); they resume once space is freed.
    #[arg(long, env = "SWARMD_MIN_FREE_SPACE", default_value = "64MiB")]
    min_free_space: String,
    /// How often the Raft leader heartbeats the other managers (e.g. 100ms).
    #[arg(long)]
    raft_heartbeat: Option<String>,
    /// How long a manager waits without hearing from a leader before it starts an election (e.g. 500ms; each
    /// manager picks at random between this and twice this). Must exceed --raft-heartbeat.
    #[arg(long)]
    raft_election_timeout: Option<String>,
    /// Restart this manager as the only member of its cluster, keeping all its state: the recovery when a
    /// majority of the managers is lost for good. The other managers then join again (manager token, empty
    /// state directories).
    #[arg(long)]
    force_new_cluster: bool,
    /// The address pools network subnets are allocated from (CIDR, comma-separated or repeated), when this
    /// node creates the cluster.
    #[arg(long, value_delimiter = ',', default_value = "10.0.0.0/8")]
    default_addr_pool: Vec<String>,
    /// The prefix length of each network's subnet cut from the pools, when this node creates the cluster.
    #[arg(long, default_value_t = 24)]
    default_addr_pool_mask_length: u8,
    /// Join the cluster whose manager listens at HOST:PORT (first start; needs --join-token: a worker token
    /// makes this node a worker, a manager token a manager).
    #[arg(long, requires = "join_token")]
    join_addr: Option<String>,
    /// The join token (`swarmctl swarm join-token worker` on a manager).
    #[arg(
        long,
        env = "SWARMD_JOIN_TOKEN",
        requires = "join_addr",
        hide_env_values = true
    )]
    join_token: Option<String>,
}

/// `SWARMD_LOG` (default `info,openraft=off`); hickory's server logs every DNS request at info, which floods the
/// log of a node whose tasks look names up: it is kept to warnings unless `SWARMD_LOG` names hickory itself
/// (the resolver's own line per query is at debug).
fn log_filter() -> tracing_subscriber::EnvFilter {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SWARMD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=off"));
    if std::env::var("SWARMD_LOG").is_ok_and(|v| v.contains("hickory")) {
        return filter;
    }
    match "hickory_server=warn".parse() {
        Ok(d) => filter.add_directive(d),
        Err(_) => filter,
    }
}

fn main() {
    // A task's supervising shim is this same binary started with a hidden argument; it never returns.
    swarm::exec::process::maybe_run_shim();
    // `swarmd __netplane MAP.json …`: converge this namespace to a network map once (tests, diagnosis).
    swarm::network::tool::maybe_run_tool();
    let args = Args::parse();
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(log_filter())
        .init();
    let heartbeat = match swarm::stack::units::parse_duration(&args.heartbeat_period) {
        Ok(d) if !d.is_zero() => d,
        _ => {
            eprintln!(
                "swarmd: invalid --heartbeat-period {:?} (e.g. 5s)",
                args.heartbeat_period
            );
            std::process::exit(2);
        }
    };
    let min_free = match swarm::stack::units::parse_bytes(&args.min_free_space) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("swarmd: invalid --min-free-space: {e} (e.g. 64MiB)");
            std::process::exit(2);
        }
    };
    let mut config = swarm::node::NodeConfig::new(args.state_dir, args.listen_addr);
    if let Some(h) = args.hostname {
        config.hostname = h;
    }
    config.executors = args
        .executor
        .iter()
        .filter_map(|e| swarm::node::ExecutorKind::parse(e))
        .collect();
    config.heartbeat_period = heartbeat;
    config.start_parallelism = args.exec_parallelism.max(1);
    config.task_networks = !args.no_task_networks;
    config.drain_delay = match swarm::stack::units::parse_duration(&args.drain_delay) {
        Ok(d) => d,
        Err(e) => {
            eprintln!(
                "swarmd: invalid --drain-delay {:?}: {e} (e.g. 2s, 0)",
                args.drain_delay
            );
            std::process::exit(2);
        }
    };
    config.raft.snapshot_interval_entries = args.snapshot_interval.max(1);
    // entries kept behind a snapshot for lagging managers: up to one interval
    config.raft.logs_kept_after_snapshot = config
        .raft
        .logs_kept_after_snapshot
        .min(config.raft.snapshot_interval_entries);
    config.raft.min_free_bytes = min_free;
    let duration = |flag: &str, value: &Option<String>| -> Option<std::time::Duration> {
        let v = value.as_ref()?;
        match swarm::stack::units::parse_duration(v) {
            Ok(d) if !d.is_zero() => Some(d),
            _ => {
                eprintln!("swarmd: invalid --{flag} {v:?} (e.g. 500ms)");
                std::process::exit(2);
            }
        }
    };
    if let Some(d) = duration("raft-heartbeat", &args.raft_heartbeat) {
        config.raft.heartbeat_interval = d;
    }
    if let Some(d) = duration("raft-election-timeout", &args.raft_election_timeout) {
        config.raft.election_timeout_min = d;
        config.raft.election_timeout_max = d * 2;
    }
    if config.raft.election_timeout_min <= config.raft.heartbeat_interval {
        eprintln!(
            "swarmd: --raft-election-timeout ({:?}) must exceed --raft-heartbeat ({:?})",
            config.raft.election_timeout_min, config.raft.heartbeat_interval
        );
        std::process::exit(2);
    }
    config.force_new_cluster = args.force_new_cluster;
    if let Err(e) =
        swarm::model::cidr::check_pool(&args.default_addr_pool, args.default_addr_pool_mask_length)
    {
        eprintln!("swarmd: invalid --default-addr-pool / --default-addr-pool-mask-length: {e}");
        std::process::exit(2);
    }
    config.default_addr_pool = args.default_addr_pool;
    config.default_addr_pool_mask_len = args.default_addr_pool_mask_length;
    if let (Some(addr), Some(token)) = (args.join_addr, args.join_token) {
        config.join = Some(swarm::node::worker::JoinConfig { addr, token });
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("swarmd: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    let result = runtime.block_on(swarm::node::run(config, async {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }));
    if let Err(e) = result {
        eprintln!("swarmd: {e}");
        std::process::exit(1);
    }
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
}
