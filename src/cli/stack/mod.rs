//! `swarmctl stack ...`: the subcommands and their arguments; each runs in a child: `config` (config,
//! validate: local), `deploy`, `diff`, `history` (history, rollback), `list` (ls, ps, services), `remove` (rm).
//! `plan` (building a deploy request, printing a plan) and `wait` (waiting for convergence) are shared by them.
//!
//! Must not: interpret stack files itself (that is `stack::load` / `stack::convert`).

mod config;
mod deploy;
mod diff;
mod history;
mod list;
mod plan;
mod remove;
mod status;
mod wait;
mod watch;

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};

use crate::cli::service::{FormatArgs, ListArgs};

/// `swarmctl stack` subcommands.
#[derive(Subcommand, Debug)]
pub enum StackCommand {
    /// Deploy a new stack or update an existing one, then wait until it converged (unless --detach).
    ///
    /// Exit status: 0 converged (or nothing to change), 1 failed (a task or job failed, an update paused or
    /// rolled back, the timeout), 2 invalid input (the files do not load or validate, or the cluster refuses
    /// the stack), 3 cluster unreachable.
    #[command(
        alias = "up",
        after_help = "Exit status: 0 converged, 1 failed / rolled back / timed out, \
        2 invalid input, 3 cluster unreachable."
    )]
    Deploy(DeployArgs),
    /// Show what a deploy of these files would change, changing nothing (exit 0: nothing to do, 2: changes).
    Diff(DiffArgs),
    /// List the revisions of a stack (each applied deploy).
    History(StackNameArgs),
    /// Re-apply an earlier revision of a stack as a new revision (default: the one before the current).
    Rollback(RollbackArgs),
    /// List stacks.
    #[command(alias = "list")]
    Ls(ListArgs),
    /// List the tasks of a stack.
    Ps(StackNameArgs),
    /// List the services of a stack.
    Services(StackNameArgs),
    /// Remove stacks (services, secrets, configs and networks they created).
    #[command(alias = "remove", alias = "down")]
    Rm(StackNamesArgs),
    /// Print the merged, interpolated and normalized stack, like `docker stack config`.
    Config(ConfigArgs),
    /// Check stack files without deploying anything.
    Validate(ValidateArgs),
    /// Keep the cluster equal to a directory (or git repository) of stack files (GitOps), in the foreground.
    Watch(watch::WatchArgs),
    /// Show a stack's source, sync state, health and services.
    Status(StackNameArgs),
}

/// Output formats of `stack config`.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum ConfigFormat {
    /// YAML, like docker.
    Yaml,
    /// One JSON document.
    Json,
}

/// Arguments of `stack config`.
#[derive(Args, Debug)]
pub struct ConfigArgs {
    /// Stack file(s); later files override earlier ones. `-` reads standard input.
    #[arg(short = 'c', long = "compose-file", required = true)]
    pub files: Vec<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "yaml")]
    pub format: ConfigFormat,
    /// Skip interpolation of environment variables (not supported: always interpolates).
    #[arg(long, hide = true)]
    pub skip_interpolation: bool,
}

/// Arguments of `stack validate`.
#[derive(Args, Debug)]
pub struct ValidateArgs {
    /// Stack file(s); later files override earlier ones.
    #[arg(short = 'c', long = "compose-file", required = true)]
    pub files: Vec<PathBuf>,
    /// Stack name used for the deploy-time checks (object names).
    #[arg(default_value = "stack")]
    pub name: String,
}

/// Arguments of `stack deploy`.
#[derive(Args, Debug)]
pub struct DeployArgs {
    /// Stack file(s); later files override earlier ones.
    #[arg(short = 'c', long = "compose-file", required = true)]
    pub files: Vec<PathBuf>,
    /// Remove services of the stack that the files no longer name.
    #[arg(long)]
    pub prune: bool,
    /// Return as soon as the change is accepted, without waiting for the services to converge.
    #[arg(short, long)]
    pub detach: bool,
    /// Give up waiting after this long (e.g. 90s, 5m).
    #[arg(long, default_value = "5m")]
    pub timeout: String,
    /// Print the plan and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// `text`, or `json`: one JSON event a line (the plan, progress per service, the result).
    #[arg(long, value_enum, default_value = "text")]
    pub format: OutputFormat,
    /// Stack name.
    pub name: String,
}

/// Output of `stack deploy`.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum OutputFormat {
    /// Lines for people.
    Text,
    /// One JSON object a line.
    Json,
}

/// Arguments of `stack diff`.
#[derive(Args, Debug)]
pub struct DiffArgs {
    /// Stack file(s); later files override earlier ones.
    #[arg(short = 'c', long = "compose-file", required = true)]
    pub files: Vec<PathBuf>,
    /// Plan as `deploy --prune` would (services the files no longer name are removed).
    #[arg(long)]
    pub prune: bool,
    /// Stack name.
    pub name: String,
}

/// Arguments of `stack rollback`.
#[derive(Args, Debug)]
pub struct RollbackArgs {
    /// The revision to re-apply (default: the one before the current).
    #[arg(long)]
    pub revision: Option<u64>,
    /// Print the plan and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Return as soon as the change is accepted.
    #[arg(short, long)]
    pub detach: bool,
    /// Give up waiting after this long.
    #[arg(long, default_value = "5m")]
    pub timeout: String,
    /// Stack name.
    pub name: String,
}

/// A stack name (plus listing format).
#[derive(Args, Debug)]
pub struct StackNameArgs {
    /// Stack name.
    pub name: String,
    /// Output format.
    #[command(flatten)]
    pub format: FormatArgs,
}

/// Stack names.
#[derive(Args, Debug)]
pub struct StackNamesArgs {
    /// Stack names.
    #[arg(required = true)]
    pub names: Vec<String>,
}

/// Runs one `stack` subcommand; returns the exit code.
pub fn run(host: Option<String>, cmd: StackCommand) -> i32 {
    match cmd {
        StackCommand::Deploy(args) => deploy::deploy(host, args),
        StackCommand::Diff(args) => diff::diff(host, args),
        StackCommand::History(args) => history::history(host, args),
        StackCommand::Rollback(args) => history::rollback(host, args),
        StackCommand::Ls(args) => list::list(host, args),
        StackCommand::Ps(args) => list::ps(host, args),
        StackCommand::Services(args) => list::services(host, args),
        StackCommand::Rm(args) => remove::remove(host, args),
        StackCommand::Config(args) => config::config(args),
        StackCommand::Validate(args) => config::validate(args),
        StackCommand::Watch(args) => watch::watch(host, args),
        StackCommand::Status(args) => status::status(host, args),
    }
}
