//! `swarmctl swarm info` (the Swarm section of `docker info`, with the cluster's limits and the worker join
//! command), `swarmctl swarm update` (the cluster's settings: limits and task history retention, like `docker
//! swarm update`) and `swarmctl swarm join-token` (like docker's).
//!
//! Must not: check the settings itself (the manager does, and names the ceiling).

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
    /// Change the cluster's settings.
    Update {
        /// Most tasks one service may ask for (replicas, or a job's tasks).
        #[arg(long)]
        max_replicas: Option<u64>,
        /// Most services one stack may have.
        #[arg(long)]
        max_services_per_stack: Option<u64>,
        /// Revisions a stack keeps for `stack history` and `stack rollback`.
        #[arg(long)]
        stack_history: Option<u64>,
        /// Terminated tasks kept per slot.
        #[arg(long)]
        task_history_limit: Option<u64>,
        /// Lifetime of the node certificates the CA issues (e.g. 2160h, the default 90 days).
        #[arg(long)]
        cert_expiry: Option<String>,
        /// Lock managers' keys at rest (true) or not (false): a restarted manager then waits for `swarm unlock`.
        #[arg(long, value_name = "true|false")]
        autolock: Option<bool>,
    },
    /// Unlock a restarted manager whose keys autolock wrapped (the key is read from a prompt or standard input).
    Unlock,
    /// Show (or rotate) the key that unlocks managers.
    UnlockKey {
        /// Print the key only.
        #[arg(short, long)]
        quiet: bool,
        /// Replace the key: the old one stops working.
        #[arg(long)]
        rotate: bool,
    },
    /// The cluster's root CA: print its certificate, rotate it, or issue a client certificate.
    Ca {
        /// Issue a certificate and key for a client called NAME (swarmctl --host tcp://MANAGER:PORT).
        #[arg(long, value_name = "NAME")]
        issue_client: Option<String>,
        /// Where to write cert.pem, key.pem (0600) and ca.pem.
        #[arg(long, default_value = ".")]
        out: std::path::PathBuf,
        /// Replace the root CA (cross-signed, so no node loses contact); waits until every node holds a
        /// certificate of the new root. Old join tokens stop working once it is done.
        #[arg(long)]
        rotate: bool,
        /// With --rotate: start the rotation and return at once.
        #[arg(short, long)]
        detach: bool,
        /// No progress lines, only the certificate.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Leave the swarm (on a worker's own socket): its tasks stop, its identity is forgotten, swarmd exits.
    Leave,
    /// Show (or rotate) the token that joins a node as a worker or a manager.
    JoinToken {
        /// `worker` or `manager`.
        role: String,
        /// Print the token only.
        #[arg(short, long)]
        quiet: bool,
        /// Replace the token: the old one stops working for new joins at once.
        #[arg(long)]
        rotate: bool,
    },
}

/// The join command for `token`, as `docker swarm join-token` shows it.
fn join_command(role: &str, token: &str, addr: &str) -> String {
    format!(
        "To add a {role} to this swarm, run the following command:\n\n    swarmd --join-addr {addr} --join-token {token}\n"
    )
}

/// Runs one `swarm` subcommand.
pub fn run(host: Option<String>, cmd: SwarmCommand) -> i32 {
    block_on(async move {
        if matches!(cmd, SwarmCommand::Unlock) {
            return super::swarm_lock::unlock(&host).await;
        }
        let mut c = client(&host).await?;
        let format = match cmd {
            SwarmCommand::Info { format } => format,
            SwarmCommand::Update {
                max_replicas,
                max_services_per_stack,
                stack_history,
                task_history_limit,
                cert_expiry,
                autolock,
            } => {
                let cert_expiry_ms = cert_expiry
                    .map(|d| {
                        crate::stack::units::parse_duration(&d)
                            .map(|d| d.as_millis() as u64)
                            .map_err(|e| format!("--cert-expiry: {e}"))
                    })
                    .transpose()?;
                c.update_cluster(control::ClusterUpdateRequest {
                    max_replicas,
                    max_services_per_stack,
                    stack_history,
                    task_history_retention_limit: task_history_limit,
                    cert_expiry_ms,
                    autolock,
                })
                .await
                .map_err(rpc)?;
                println!("Swarm updated.");
                if autolock == Some(true) {
                    let key = c
                        .unlock_key(control::UnlockKeyRequest { rotate: false })
                        .await
                        .map_err(rpc)?
                        .into_inner()
                        .key;
                    super::swarm_lock::print_key(&key);
                }
                return Ok(());
            }
            SwarmCommand::Unlock => return Ok(()),
            SwarmCommand::UnlockKey { quiet, rotate } => {
                return super::swarm_lock::unlock_key(&mut c, quiet, rotate).await;
            }
            SwarmCommand::Leave => {
                let channel = crate::transport::unix_channel(
                    crate::cli::client::resolve_host(host.as_deref())
                        .strip_prefix("unix://")
                        .unwrap_or_default()
                        .into(),
                )
                .await
                .map_err(|e| format!("cannot reach this node's socket: {e}"))?;
                let left =
                    crate::api::control::worker_local_client::WorkerLocalClient::new(channel)
                        .leave(control::Empty {})
                        .await;
                return match left {
                    Ok(_) => {
                        println!("Node left the swarm.");
                        Ok(())
                    }
                    Err(s) if s.code() == tonic::Code::Unimplemented => Err(
                        "this node is a manager: demote it first (`swarmctl node demote NODE` on any manager), then leave"
                            .into(),
                    ),
                    Err(s) => Err(rpc(s)),
                };
            }
            SwarmCommand::Ca {
                issue_client,
                out,
                rotate,
                detach,
                quiet,
            } => {
                let args = super::swarm_ca::CaArgs {
                    issue_client,
                    out,
                    rotate,
                    detach,
                    quiet,
                };
                return super::swarm_ca::run(&mut c, args).await;
            }
            SwarmCommand::JoinToken {
                role,
                quiet,
                rotate,
            } => {
                let reply = c
                    .join_token(control::JoinTokenRequest {
                        role: role.clone(),
                        rotate,
                    })
                    .await
                    .map_err(rpc)?
                    .into_inner();
                if quiet {
                    println!("{}", reply.token);
                    return Ok(());
                }
                if rotate {
                    println!("Successfully rotated {role} join token.\n");
                }
                print!("{}", join_command(&role, &reply.token, &reply.join_addr));
                return Ok(());
            }
        };
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
        let limit = |k: &str| info["Limits"][k].to_string();
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
        println!(" Limits:");
        println!("  Max Replicas: {}", limit("max_replicas"));
        println!(
            "  Max Services Per Stack: {}",
            limit("max_services_per_stack")
        );
        println!("  Stack History: {}", limit("stack_history"));
        println!(" CA Configuration:");
        println!(
            "  Expiry Duration: {}",
            crate::stack::units::format_duration(std::time::Duration::from_secs(
                info["CertExpirySecs"].as_u64().unwrap_or(0)
            ))
        );
        println!(
            "  Root Rotation In Progress: {}",
            s("RootRotationInProgress")
        );
        println!(" Autolock Managers: {}", s("AutoLockManagers"));
        println!(" Raft:");
        println!("  Snapshot Interval: {}", s("SnapshotInterval"));
        println!("  Last Log Index: {}", s("RaftLastLogIndex"));
        let members = info["RaftMembers"].as_array().cloned().unwrap_or_default();
        if !members.is_empty() {
            println!("  Managers:");
            for m in &members {
                let status = if m["Leader"] == true {
                    "Leader"
                } else if m["Voter"] != true {
                    "Joining (catching up)"
                } else if m["Reachable"] == true {
                    "Reachable"
                } else {
                    "Unreachable"
                };
                println!(
                    "   {} {} {status}",
                    m["NodeID"]
                        .as_str()
                        .filter(|n| !n.is_empty())
                        .unwrap_or("?"),
                    m["Addr"].as_str().unwrap_or_default()
                );
            }
            let q = &info["Quorum"];
            let (voters, reachable, need) = (
                q["Voters"].as_u64().unwrap_or(0),
                q["Reachable"].as_u64().unwrap_or(0),
                q["Need"].as_u64().unwrap_or(0),
            );
            let words = if info["Leader"].is_null() {
                format!("no leader: {reachable} of {voters} managers reachable from here (a quorum needs {need}); writes are refused, reads may be stale")
            } else if reachable >= need {
                format!("{reachable} of {voters} managers reachable, a quorum needs {need}: the cluster takes writes and survives the loss of {}", reachable - need)
            } else {
                format!("{reachable} of {voters} managers reachable, a quorum needs {need}: writes are refused")
            };
            println!("  Quorum: {words}");
        }
        println!(" Dispatcher:");
        println!(
            "  Heartbeat Period: {}",
            crate::stack::units::format_duration(std::time::Duration::from_millis(period_ms))
        );
        let worker = c
            .join_token(control::JoinTokenRequest {
                role: "worker".into(),
                rotate: false,
            })
            .await;
        if let Ok(reply) = worker {
            let reply = reply.into_inner();
            println!(
                " Join (worker): swarmd --join-addr {} --join-token {}",
                reply.join_addr, reply.token
            );
        }
        Ok(())
    })
}
