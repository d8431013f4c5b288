//! `swarmctl swarm info`: the Swarm section of `docker info`.
//!
//! Must not: change anything.

use clap::Subcommand;

use super::common::*;
use crate::api::control;

/// `swarmctl swarm` subcommands.
#[derive(Subcommand, Debug)]
pub enum SwarmCommand {
    /// Show the cluster's state, like the Swarm section of `docker info`.
    Info {
        /// `text` (default) or `json`.
        #[arg(long, default_value = "text")]
        format: String,
    },
}

/// Runs one `swarm` subcommand.
pub fn run(host: Option<String>, cmd: SwarmCommand) -> i32 {
    block_on(async move {
        let mut c = client(&host).await?;
        let SwarmCommand::Info { format } = cmd;
        let info: serde_json::Value = decode(
            &c.info(control::Empty {})
                .await
                .map_err(rpc)?
                .into_inner()
                .json,
        )?;
        if format == "json" {
            println!("{info}");
            return Ok(());
        }
        let s = |k: &str| info[k].to_string().trim_matches('"').to_string();
        let period_ms = info["HeartbeatPeriodMs"].as_u64().unwrap_or(0);
        println!("Swarm: active");
        println!(" NodeID: {}", s("NodeID"));
        println!(" Is Manager: {}", s("IsManager"));
        println!(" ClusterID: {}", s("ClusterID"));
        println!(" Managers: {}", s("Managers"));
        println!(" Nodes: {}", s("Nodes"));
        println!(" Orchestration:");
        println!(
            "  Task History Retention Limit: {}",
            s("TaskHistoryRetentionLimit")
        );
        println!(" Raft:");
        println!("  Snapshot Interval: {}", s("SnapshotInterval"));
        println!("  Last Log Index: {}", s("RaftLastLogIndex"));
        println!(" Dispatcher:");
        println!(
            "  Heartbeat Period: {}",
            crate::stack::units::format_duration(std::time::Duration::from_millis(period_ms))
        );
        Ok(())
    })
}
