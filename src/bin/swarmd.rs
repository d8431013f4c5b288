//! `swarmd`: the node daemon. Parses arguments and hands over to the library; nothing else.

use std::path::PathBuf;

use clap::Parser;

/// swarmd — a swarm node: manager (Raft store, reconcilers, dispatcher) and worker (agent, executor).
#[derive(Parser, Debug)]
#[command(name = "swarmd", version, about)]
struct Args {
    /// State directory: an empty one initializes a new cluster, an existing one resumes.
    #[arg(long, env = "SWARMD_STATE_DIR")]
    state_dir: PathBuf,
    /// Node hostname (default: the machine's).
    #[arg(long)]
    hostname: Option<String>,
    /// Address the cluster API listens on.
    #[arg(long, default_value = "127.0.0.1:4242")]
    listen_addr: String,
    /// Task runtime: the embedded process executor or Docker.
    #[arg(long, default_value = "process", value_parser = ["process", "docker"])]
    executor: String,
}

fn main() {
    // A task's supervising shim is this same binary started with a hidden argument; it never returns.
    swarm::exec::process::maybe_run_shim();
    let args = Args::parse();
    eprintln!(
        "swarmd: the node daemon is not wired yet (state dir {}, listen {}, executor {}): the Raft store, \
         executors and stack loader exist as libraries; the manager/agent wiring is the open \"single-node \
         cluster\" issue",
        args.state_dir.display(),
        args.listen_addr,
        args.executor
    );
    let _ = args.hostname;
    std::process::exit(1);
}
