//! `swarmctl task inspect ID...`: a task as docker's `inspect` shows it, with its network attachments (the
//! addresses IPAM gave it on each network).
//!
//! Must not: reach the store (tasks come from `ListTasks`).

use clap::{Args, Subcommand};

use super::common::*;
use crate::api::control;
use crate::model::{Network, Task};

/// `swarmctl task` subcommands.
#[derive(Subcommand, Debug)]
pub enum TaskCommand {
    /// Show tasks in detail (JSON, with their network addresses).
    Inspect(IdsArgs),
}

/// Task ids (or unambiguous prefixes).
#[derive(Args, Debug)]
pub struct IdsArgs {
    /// Task ids or id prefixes.
    #[arg(required = true)]
    pub tasks: Vec<String>,
}

/// docker's task object for `t`, `networks` naming the attached networks.
pub fn inspect_json(t: &Task, networks: &[Network]) -> serde_json::Value {
    let attachments: Vec<serde_json::Value> = t
        .attachments
        .iter()
        .map(|a| {
            let name = networks
                .iter()
                .find(|n| n.id == a.network_id)
                .map_or("", |n| n.spec.name.as_str());
            serde_json::json!({
                "Network": {"ID": a.network_id, "Spec": {"Name": name}},
                "Addresses": [a.addr],
            })
        })
        .collect();
    serde_json::json!({
        "ID": t.id,
        "Version": {"Index": t.meta.version},
        "CreatedAt": t.meta.created_at,
        "UpdatedAt": t.meta.updated_at,
        "ServiceID": t.service_id,
        "Slot": t.slot,
        "NodeID": t.node_id,
        "Spec": t.spec,
        "Status": t.status,
        "DesiredState": t.desired_state.name(),
        "NetworksAttachments": attachments,
    })
}

/// Runs one `task` subcommand.
pub fn run(host: Option<String>, cmd: TaskCommand) -> i32 {
    block_on(async move {
        let mut c = client(&host).await?;
        let TaskCommand::Inspect(a) = cmd;
        let reply = c
            .list_tasks(control::TaskFilter::default())
            .await
            .map_err(rpc)?;
        let tasks: Vec<Task> = decode_all(reply.into_inner().json)?;
        let reply = c.list_networks(control::Empty {}).await.map_err(rpc)?;
        let networks: Vec<Network> = decode_all(reply.into_inner().json)?;
        let mut out = Vec::new();
        for key in &a.tasks {
            let found: Vec<&Task> = match tasks.iter().find(|t| &t.id == key) {
                Some(t) => vec![t],
                None => tasks
                    .iter()
                    .filter(|t| t.id.starts_with(key.as_str()))
                    .collect(),
            };
            match found.as_slice() {
                [t] => out.push(inspect_json(t, &networks)),
                [] => return Err(format!("no such task: {key}")),
                _ => return Err(format!("task {key} is ambiguous ({} matches)", found.len())),
            }
        }
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        Ok(())
    })
}
