//! `swarmctl`: argument parsing and one file per noun. Talks to the cluster only through the control API.
//!
//! Must not: reach into the store or the manager directly. Exit status is 0 only when what was asked happened.

pub mod client;
pub mod common;
pub mod network;
pub mod node;
pub mod output;
pub mod secret;
pub mod service;
pub mod stack;
pub mod swarm;
pub mod swarm_ca;
pub mod swarm_lock;
pub mod task;

use clap::{Parser, Subcommand};

/// swarmctl — drive a swarm cluster: deploy stacks, inspect services, manage nodes and secrets.
#[derive(Parser, Debug)]
#[command(name = "swarmctl", version, about, propagate_version = true)]
pub struct Cli {
    /// Control endpoint, e.g. unix:///var/lib/swarm/swarmd.sock (default: the local node's socket).
    #[arg(long, short = 'H', env = "SWARM_HOST", global = true)]
    pub host: Option<String>,
    /// For a tcp://HOST:PORT host: the client certificate (`swarm ca --issue-client` on a manager).
    #[arg(long, env = "SWARM_TLS_CERT", global = true)]
    pub tls_cert: Option<std::path::PathBuf>,
    /// For a tcp:// host: the client certificate's key.
    #[arg(long, env = "SWARM_TLS_KEY", global = true)]
    pub tls_key: Option<std::path::PathBuf>,
    /// For a tcp:// host: the cluster's CA certificate.
    #[arg(long, env = "SWARM_TLS_CA", global = true)]
    pub tls_ca: Option<std::path::PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level nouns.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Manage stacks (deploy, config, validate, ...).
    #[command(subcommand)]
    Stack(stack::StackCommand),
    /// Manage services.
    #[command(subcommand)]
    Service(service::ServiceCommand),
    /// Manage nodes.
    #[command(subcommand)]
    Node(node::NodeCommand),
    /// Manage secrets.
    #[command(subcommand)]
    Secret(secret::SecretCommand),
    /// Manage networks.
    #[command(subcommand)]
    Network(network::NetworkCommand),
    /// Inspect tasks.
    #[command(subcommand)]
    Task(task::TaskCommand),
    /// Cluster-wide information.
    #[command(subcommand)]
    Swarm(swarm::SwarmCommand),
}

/// Runs `swarmctl` with the given arguments; returns the process exit code.
pub fn run<I, T>(args: I) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    client::set_tls_files(client::TlsFiles {
        cert: cli.tls_cert.clone(),
        key: cli.tls_key.clone(),
        ca: cli.tls_ca.clone(),
    });
    match cli.command {
        Command::Stack(cmd) => stack::run(cli.host, cmd),
        Command::Service(cmd) => service::run(cli.host, cmd),
        Command::Node(cmd) => node::run(cli.host, cmd),
        Command::Secret(cmd) => secret::run(cli.host, cmd),
        Command::Network(cmd) => network::run(cli.host, cmd),
        Command::Task(cmd) => task::run(cli.host, cmd),
        Command::Swarm(cmd) => swarm::run(cli.host, cmd),
    }
}
