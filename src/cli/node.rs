//! `swarmctl node ...`: ls, inspect, update.
//!
//! Must not: change anything but through the control API.

use std::collections::HashMap;

use clap::{Args, Subcommand};

use super::common::*;
use super::output::Table;
use super::service::FormatArgs;
use crate::api::control;
use crate::model::{Node, NodeAvailability, NodeRole, NodeState, Reachability};

/// `swarmctl node` subcommands.
#[derive(Subcommand, Debug)]
pub enum NodeCommand {
    /// List nodes.
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Show nodes in detail (JSON).
    Inspect(InspectArgs),
    /// Change a node's availability or labels.
    Update(UpdateArgs),
    /// Remove worker nodes from the cluster (their certificates are refused from then on).
    #[command(alias = "remove")]
    Rm(RmArgs),
    /// List the tasks on nodes (this node by default).
    Ps(NodePsArgs),
    /// Promote a worker to a manager.
    Promote(InspectArgs),
    /// Demote a manager to a worker.
    Demote(InspectArgs),
}

/// Arguments of `node ps`.
#[derive(Args, Debug)]
pub struct NodePsArgs {
    /// Node ids or hostnames ("self", the default, for this node).
    pub nodes: Vec<String>,
    /// Output format.
    #[command(flatten)]
    pub format: crate::cli::service::FormatArgs,
}

/// Arguments of `node rm`.
#[derive(Args, Debug)]
pub struct RmArgs {
    /// Remove a node that is not down (it is cut off at once; its tasks are replaced elsewhere).
    #[arg(short, long)]
    pub force: bool,
    /// Node ids or hostnames.
    #[arg(required = true)]
    pub nodes: Vec<String>,
}

/// Arguments of `node ls`.
#[derive(Args, Debug)]
pub struct LsArgs {
    /// Output format.
    #[command(flatten)]
    pub format: FormatArgs,
}

/// Arguments of `node inspect`.
#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Node ids or hostnames ("self" for this node).
    #[arg(required = true)]
    pub nodes: Vec<String>,
}

/// Arguments of `node update`.
#[derive(Args, Debug)]
pub struct UpdateArgs {
    /// active, pause or drain.
    #[arg(long)]
    pub availability: Option<String>,
    /// Add or change a label (`key=value`).
    #[arg(long = "label-add")]
    pub label_add: Vec<String>,
    /// Remove a label.
    #[arg(long = "label-rm")]
    pub label_rm: Vec<String>,
    /// Node id or hostname.
    pub node: String,
}

fn status(s: NodeState) -> &'static str {
    match s {
        NodeState::Unknown => "Unknown",
        NodeState::Down => "Down",
        NodeState::Ready => "Ready",
        NodeState::Disconnected => "Disconnected",
    }
}

async fn self_id(c: &mut Client) -> Result<String, String> {
    let info: serde_json::Value = decode(
        &c.info(control::Empty {})
            .await
            .map_err(rpc)?
            .into_inner()
            .json,
    )?;
    Ok(info["NodeID"].as_str().unwrap_or_default().to_string())
}

/// Runs one `node` subcommand.
pub fn run(host: Option<String>, cmd: NodeCommand) -> i32 {
    let cmd_role = match &cmd {
        NodeCommand::Promote(_) => Some(true),
        NodeCommand::Demote(_) => Some(false),
        _ => None,
    };
    block_on(async move {
        let mut c = client(&host).await?;
        match cmd {
            NodeCommand::Ls(a) => {
                let me = self_id(&mut c).await?;
                let info: serde_json::Value = decode(
                    &c.info(control::Empty {})
                        .await
                        .map_err(rpc)?
                        .into_inner()
                        .json,
                )?;
                let mut nodes: Vec<Node> = decode_all(
                    c.list_nodes(control::Empty {})
                        .await
                        .map_err(rpc)?
                        .into_inner()
                        .json,
                )?;
                nodes.sort_by(|a, b| a.description.hostname.cmp(&b.description.hostname));
                if a.format.quiet {
                    nodes.iter().for_each(|n| println!("{}", n.id));
                    return Ok(());
                }
                let leader_is_me = info["Leader"].is_number();
                let mut table = Table::new(&[
                    "ID",
                    "HOSTNAME",
                    "STATUS",
                    "AVAILABILITY",
                    "MANAGER STATUS",
                    "ENGINE VERSION",
                ]);
                for n in &nodes {
                    let manager = match (n.spec.role, &n.manager_status) {
                        (NodeRole::Manager, Some(ms)) if ms.leader => "Leader",
                        (NodeRole::Manager, Some(ms)) => match ms.reachability {
                            Reachability::Reachable => "Reachable",
                            Reachability::Unreachable => "Unreachable",
                            Reachability::Unknown => "Unknown",
                        },
                        // a manager registered before Raft ids were kept, or a promotion under way
                        (NodeRole::Manager, None) if n.id == me && leader_is_me => "Leader",
                        (NodeRole::Manager, None) => "Unknown",
                        (NodeRole::Worker, _) => "",
                    };
                    let id = if n.id == me {
                        format!("{} *", n.id)
                    } else {
                        n.id.clone()
                    };
                    let row = vec![
                        id,
                        n.description.hostname.clone(),
                        status(n.status.state).into(),
                        n.spec.availability.title().into(),
                        manager.into(),
                        env!("CARGO_PKG_VERSION").into(),
                    ];
                    if a.format.format == "json" {
                        println!(
                            "{}",
                            serde_json::json!({"ID": n.id, "Self": n.id == me, "Hostname": row[1], "Status": row[2],
                                "Availability": row[3], "ManagerStatus": row[4], "EngineVersion": row[5]})
                        );
                    } else {
                        table.row(row);
                    }
                }
                if a.format.format != "json" {
                    print!("{}", table.render());
                }
                Ok(())
            }
            NodeCommand::Inspect(a) => {
                let mut out = Vec::new();
                for n in &a.nodes {
                    let key = if n == "self" {
                        self_id(&mut c).await?
                    } else {
                        n.clone()
                    };
                    let reply = c
                        .get_node(control::ObjectRef { id_or_name: key })
                        .await
                        .map_err(rpc)?;
                    out.push(decode::<serde_json::Value>(&reply.into_inner().json)?);
                }
                println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
                Ok(())
            }
            NodeCommand::Update(a) => {
                // the control API's own parser: a wrong word is refused before anything is sent
                let availability = a
                    .availability
                    .as_deref()
                    .map(str::parse::<NodeAvailability>)
                    .transpose()
                    .map_err(|e| e.to_string())?;
                let mut label_add = HashMap::new();
                for l in &a.label_add {
                    let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
                    label_add.insert(k.to_string(), v.to_string());
                }
                let node = if a.node == "self" {
                    self_id(&mut c).await?
                } else {
                    a.node.clone()
                };
                c.update_node(control::NodeUpdateRequest {
                    node,
                    availability: availability
                        .map(|v| v.name().to_string())
                        .unwrap_or_default(),
                    label_add,
                    label_rm: a.label_rm.clone(),
                    role: String::new(),
                })
                .await
                .map_err(rpc)?;
                println!("{}", a.node);
                Ok(())
            }
            NodeCommand::Ps(a) => {
                let nodes = if a.nodes.is_empty() {
                    vec!["self".to_string()]
                } else {
                    a.nodes.clone()
                };
                let mut tasks = Vec::new();
                for n in &nodes {
                    let node = if n == "self" {
                        self_id(&mut c).await?
                    } else {
                        n.clone()
                    };
                    let reply = c
                        .list_tasks(control::TaskFilter {
                            node,
                            ..Default::default()
                        })
                        .await
                        .map_err(rpc)?;
                    tasks.extend(decode_all::<crate::model::Task>(reply.into_inner().json)?);
                }
                crate::cli::service::print_ps(&mut c, tasks, &a.format).await
            }
            NodeCommand::Rm(a) => {
                for n in &a.nodes {
                    c.remove_node(control::NodeRemoveRequest {
                        node: n.clone(),
                        force: a.force,
                    })
                    .await
                    .map_err(rpc)?;
                    println!("{n}");
                }
                Ok(())
            }
            NodeCommand::Promote(a) | NodeCommand::Demote(a) => {
                let (role, done) = match &cmd_role {
                    Some(true) => ("manager", "promoted to a manager"),
                    _ => ("worker", "demoted in the swarm"),
                };
                for n in &a.nodes {
                    let node = if n == "self" {
                        self_id(&mut c).await?
                    } else {
                        n.clone()
                    };
                    c.update_node(control::NodeUpdateRequest {
                        node: node.clone(),
                        role: role.into(),
                        ..Default::default()
                    })
                    .await
                    .map_err(rpc)?;
                    println!("Node {n} {done}.");
                }
                Ok(())
            }
        }
    })
}
