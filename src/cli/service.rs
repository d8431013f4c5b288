//! `swarmctl service ...`: ls, ps, inspect, scale, logs, rm, update, rollback.
//!
//! Must not: change anything but through the control API.

use std::collections::HashMap;

use clap::{Args, Subcommand};

use super::common::*;
use super::output::{short_id, Table};
use crate::api::control;
use crate::model::{Node, Service, Task};

/// `swarmctl service` subcommands.
#[derive(Subcommand, Debug)]
pub enum ServiceCommand {
    /// List services.
    #[command(alias = "list")]
    Ls(ListArgs),
    /// List the tasks of one or more services.
    Ps(PsArgs),
    /// Show services in detail (JSON).
    Inspect(InspectArgs),
    /// Scale replicated services: `scale web=5 api=2`.
    Scale(ScaleArgs),
    /// Show the output of a service's tasks.
    Logs(LogsArgs),
    /// Remove services.
    #[command(alias = "remove")]
    Rm(RmArgs),
    /// Update a service (a change of the task template rolls its tasks under update_config).
    Update(UpdateArgs),
    /// Roll a service back to its previous spec.
    Rollback(RollbackArgs),
}

/// Arguments of `service update`.
#[derive(Args, Debug)]
pub struct UpdateArgs {
    /// New image.
    #[arg(long)]
    pub image: Option<String>,
    /// Add or change an environment variable (`KEY=VALUE`).
    #[arg(long = "env-add")]
    pub env_add: Vec<String>,
    /// Remove an environment variable.
    #[arg(long = "env-rm")]
    pub env_rm: Vec<String>,
    /// Number of tasks.
    #[arg(long)]
    pub replicas: Option<u64>,
    /// Replace the tasks even if nothing else changed.
    #[arg(long)]
    pub force: bool,
    /// Tasks updated at once (0 = all).
    #[arg(long = "update-parallelism")]
    pub update_parallelism: Option<u64>,
    /// Wait between batches (e.g. 10s).
    #[arg(long = "update-delay")]
    pub update_delay: Option<String>,
    /// start-first or stop-first.
    #[arg(long = "update-order")]
    pub update_order: Option<String>,
    /// pause, continue or rollback.
    #[arg(long = "update-failure-action")]
    pub update_failure_action: Option<String>,
    /// Service name or id.
    pub service: String,
}

/// Arguments of `service rollback`.
#[derive(Args, Debug)]
pub struct RollbackArgs {
    /// Service name or id.
    pub service: String,
}

/// Output format flags shared by listing commands.
#[derive(Args, Debug, Clone)]
pub struct FormatArgs {
    /// Only print ids.
    #[arg(short, long)]
    pub quiet: bool,
    /// `table` (default) or `json` (one object per line, docker's keys).
    #[arg(long, default_value = "table")]
    pub format: String,
}

/// Arguments of `service ls`.
#[derive(Args, Debug)]
pub struct ListArgs {
    /// Output format.
    #[command(flatten)]
    pub format: FormatArgs,
}

/// Arguments of `service ps`.
#[derive(Args, Debug)]
pub struct PsArgs {
    /// Service names or ids.
    #[arg(required = true)]
    pub services: Vec<String>,
    /// Output format.
    #[command(flatten)]
    pub format: FormatArgs,
}

/// Arguments of `service inspect`.
#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Service names or ids.
    #[arg(required = true)]
    pub services: Vec<String>,
}

/// Arguments of `service scale`.
#[derive(Args, Debug)]
pub struct ScaleArgs {
    /// `SERVICE=REPLICAS` pairs.
    #[arg(required = true)]
    pub pairs: Vec<String>,
}

/// Arguments of `service logs`.
#[derive(Args, Debug)]
pub struct LogsArgs {
    /// Service name or id.
    pub service: String,
    /// Keep following new output.
    #[arg(short, long)]
    pub follow: bool,
    /// Only the last N lines of each task ("all" for everything).
    #[arg(short = 'n', long, default_value = "all")]
    pub tail: String,
}

/// Arguments of `service rm`.
#[derive(Args, Debug)]
pub struct RmArgs {
    /// Service names or ids.
    #[arg(required = true)]
    pub services: Vec<String>,
}

/// Runs one `service` subcommand.
pub fn run(host: Option<String>, cmd: ServiceCommand) -> i32 {
    block_on(async move {
        let mut c = client(&host).await?;
        match cmd {
            ServiceCommand::Ls(a) => list(&mut c, "", &a.format).await,
            ServiceCommand::Ps(a) => {
                let mut tasks = Vec::new();
                for s in &a.services {
                    let reply = c
                        .list_tasks(control::TaskFilter {
                            service: s.clone(),
                            ..Default::default()
                        })
                        .await
                        .map_err(rpc)?;
                    tasks.extend(decode_all::<Task>(reply.into_inner().json)?);
                }
                print_ps(&mut c, tasks, &a.format).await
            }
            ServiceCommand::Inspect(a) => {
                let mut out = Vec::new();
                for s in &a.services {
                    let reply = c
                        .get_service(control::ObjectRef {
                            id_or_name: s.clone(),
                        })
                        .await
                        .map_err(rpc)?;
                    out.push(decode::<serde_json::Value>(&reply.into_inner().json)?);
                }
                println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
                Ok(())
            }
            ServiceCommand::Scale(a) => {
                let mut failed = Vec::new();
                for pair in &a.pairs {
                    let (name, replicas) = match crate::manager::rules::parse_scale_arg(pair) {
                        Ok(arg) => arg,
                        Err(e) => {
                            failed.push(e);
                            continue;
                        }
                    };
                    match c
                        .scale_service(control::ScaleRequest {
                            service: name.into(),
                            replicas,
                        })
                        .await
                    {
                        Ok(_) => println!("{name} scaled to {replicas}"),
                        Err(e) => failed.push(rpc(e)),
                    }
                }
                all_ok(failed)
            }
            ServiceCommand::Logs(a) => {
                let tail = if a.tail == "all" {
                    0
                } else {
                    a.tail
                        .parse::<u64>()
                        .map_err(|_| format!("invalid --tail {:?}: a number or \"all\"", a.tail))?
                };
                let mut stream = c
                    .service_logs(control::LogsRequest {
                        service: a.service.clone(),
                        follow: a.follow,
                        tail,
                    })
                    .await
                    .map_err(rpc)?
                    .into_inner();
                while let Some(line) = stream.message().await.map_err(rpc)? {
                    let text = format!("{}    | {}", line.task_name, line.line);
                    if line.stream == "error" {
                        eprintln!("warning: {}: {}", line.task_name, line.line);
                    } else if line.stream == "stderr" {
                        eprintln!("{text}");
                    } else {
                        println!("{text}");
                    }
                }
                Ok(())
            }
            ServiceCommand::Update(a) => {
                let reply = c
                    .update_service(control::ServiceUpdateRequest {
                        service: a.service.clone(),
                        image: a.image.unwrap_or_default(),
                        env_add: a.env_add,
                        env_rm: a.env_rm,
                        replicas: a.replicas,
                        force: a.force,
                        update_parallelism: a.update_parallelism,
                        update_delay: a.update_delay.unwrap_or_default(),
                        update_order: a.update_order.unwrap_or_default(),
                        update_failure_action: a.update_failure_action.unwrap_or_default(),
                    })
                    .await
                    .map_err(rpc)?
                    .into_inner();
                if reply.changes.is_empty() {
                    println!("{}: nothing to change", a.service);
                } else {
                    println!("{}: {}", a.service, reply.changes.join("; "));
                }
                Ok(())
            }
            ServiceCommand::Rollback(a) => {
                let reply = c
                    .rollback_service(control::ObjectRef {
                        id_or_name: a.service.clone(),
                    })
                    .await
                    .map_err(rpc)?
                    .into_inner();
                println!("{}: rollback: {}", a.service, reply.changes.join("; "));
                Ok(())
            }
            ServiceCommand::Rm(a) => {
                let mut failed = Vec::new();
                for s in &a.services {
                    match c
                        .remove_service(control::ObjectRef {
                            id_or_name: s.clone(),
                        })
                        .await
                    {
                        Ok(_) => println!("{s}"),
                        Err(e) => failed.push(rpc(e)),
                    }
                }
                all_ok(failed)
            }
        }
    })
}

/// Fetches services (of `stack`, or all), tasks and nodes.
pub async fn fetch(
    c: &mut Client,
    stack: &str,
) -> Result<(Vec<Service>, Vec<Task>, Vec<Node>), String> {
    let services: Vec<Service> = decode_all(
        c.list_services(control::ServiceFilter {
            stack: stack.into(),
        })
        .await
        .map_err(rpc)?
        .into_inner()
        .json,
    )?;
    let tasks: Vec<Task> = decode_all(
        c.list_tasks(control::TaskFilter {
            stack: stack.into(),
            ..Default::default()
        })
        .await
        .map_err(rpc)?
        .into_inner()
        .json,
    )?;
    let nodes: Vec<Node> = decode_all(
        c.list_nodes(control::Empty {})
            .await
            .map_err(rpc)?
            .into_inner()
            .json,
    )?;
    Ok((services, tasks, nodes))
}

/// Prints `service ls` (or `stack services`).
pub async fn list(c: &mut Client, stack: &str, format: &FormatArgs) -> CmdResult {
    let (mut services, tasks, nodes) = fetch(c, stack).await?;
    services.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
    if format.quiet {
        for s in &services {
            println!("{}", s.id);
        }
        return Ok(());
    }
    let mut table = Table::new(&["ID", "NAME", "MODE", "REPLICAS", "IMAGE", "PORTS"]);
    for s in &services {
        let row = vec![
            short_id(&s.id).to_string(),
            s.spec.name.clone(),
            mode(s).to_string(),
            replicas(s, &tasks, &nodes),
            s.spec.task.container.image.clone(),
            ports(s),
        ];
        if format.format == "json" {
            let json = serde_json::json!({
                "ID": row[0], "Name": row[1], "Mode": row[2], "Replicas": row[3], "Image": row[4], "Ports": row[5],
            });
            println!("{json}");
        } else {
            table.row(row);
        }
    }
    if format.format != "json" {
        print!("{}", table.render());
    }
    Ok(())
}

/// Prints tasks like `service ps`.
pub async fn print_ps(c: &mut Client, tasks: Vec<Task>, format: &FormatArgs) -> CmdResult {
    let (services, _, nodes) = fetch(c, "").await?;
    let services: HashMap<String, Service> =
        services.into_iter().map(|s| (s.id.clone(), s)).collect();
    let nodes: HashMap<String, Node> = nodes.into_iter().map(|n| (n.id.clone(), n)).collect();
    let rows = ps_rows(&tasks, &services, &nodes);
    if format.quiet {
        for (t, _) in &rows {
            println!("{}", t.id);
        }
        return Ok(());
    }
    if format.format == "json" {
        for (t, row) in &rows {
            println!("{}", ps_json(row, t));
        }
        return Ok(());
    }
    let mut table = Table::new(&[
        "ID",
        "NAME",
        "IMAGE",
        "NODE",
        "DESIRED STATE",
        "CURRENT STATE",
        "ERROR",
        "PORTS",
    ]);
    for (_, mut row) in rows {
        row.push(String::new());
        table.row(row);
    }
    print!("{}", table.render());
    Ok(())
}
