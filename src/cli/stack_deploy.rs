//! `swarmctl stack deploy | ls | ps | services | rm`: the commands that send a stack to the cluster and watch it.
//!
//! Must not: interpret stack files (that is `stack::load` / `stack::convert`) or decide convergence on the server.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use super::common::*;
use super::output::Table;
use super::service::{fetch, list as list_services, print_ps, ListArgs};
use super::stack::{DeployArgs, StackNameArgs, StackNamesArgs};
use crate::api::{control, to_json};
use crate::model::{Service, ServiceMode, Stack, Task, TaskState};
use crate::stack::{self, LoadOptions};

/// `stack deploy`.
pub fn deploy(host: Option<String>, args: DeployArgs) -> i32 {
    let loaded = match stack::load(&args.files, &LoadOptions::default()) {
        Ok(l) => l,
        Err(e) => {
            for p in &e.problems {
                eprintln!("error: {p}");
            }
            return 1;
        }
    };
    for w in &loaded.warnings {
        eprintln!("{w}");
    }
    let spec = match stack::convert::convert(&args.name, &loaded.stack) {
        Ok(s) => s,
        Err(e) => {
            for p in &e.problems {
                eprintln!("error: {p}");
            }
            return 1;
        }
    };
    let timeout = match stack::units::parse_duration(&args.timeout) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: --timeout: {e}");
            return 1;
        }
    };
    let service_names: Vec<String> = spec.services.iter().map(|s| s.name.clone()).collect();
    block_on(async move {
        let mut c = client(&host).await?;
        let files = loaded
            .sources
            .iter()
            .map(|(name, text)| control::StackFile {
                name: name.clone(),
                text: text.clone(),
            })
            .collect();
        let reply = c
            .deploy_stack(control::DeployStackRequest {
                spec_json: to_json(&spec),
                files,
                prune: args.prune,
            })
            .await
            .map_err(rpc)?
            .into_inner();
        if reply.changes.is_empty() {
            println!("Stack {} is up to date: nothing to change", args.name);
        }
        for change in &reply.changes {
            let mut words = change.splitn(2, ' ');
            let verb = words.next().unwrap_or("");
            let rest = words.next().unwrap_or("");
            let verb = match verb {
                "create" => "Creating",
                "update" => "Updating",
                "remove" => "Removing",
                other => other,
            };
            println!("{verb} {rest}");
        }
        if args.detach {
            return Ok(());
        }
        wait_converged(&mut c, &args.name, &service_names, timeout).await
    })
}

#[derive(PartialEq, Eq, Clone, Debug)]
enum Progress {
    Converging(String),
    Done(String),
    Failed(String),
}

fn progress(svc: &Service, tasks: &[&Task], started_ms: u64) -> Progress {
    let current: Vec<&&Task> = tasks
        .iter()
        .filter(|t| t.spec_version >= svc.spec_version)
        .collect();
    let running = current.iter().filter(|t| is_running(t)).count() as u64;
    let live = current
        .iter()
        .filter(|t| t.desired_state <= TaskState::Running && !t.status.state.is_terminal())
        .count();
    let failed: Vec<&&&Task> = current
        .iter()
        .filter(|t| {
            matches!(t.status.state, TaskState::Failed | TaskState::Rejected)
                && t.status.timestamp >= started_ms
        })
        .collect();
    let last_error = failed
        .iter()
        .max_by_key(|t| t.status.timestamp)
        .map(|t| {
            t.status
                .err
                .clone()
                .unwrap_or_else(|| t.status.message.clone())
        })
        .unwrap_or_default();
    let (done, text, want) = match &svc.spec.mode {
        ServiceMode::Replicated { replicas } => (
            running == *replicas && live as u64 == *replicas,
            format!("{running}/{replicas} running"),
            *replicas,
        ),
        ServiceMode::Global => {
            let desired = current
                .iter()
                .filter(|t| t.desired_state <= TaskState::Running)
                .count() as u64;
            (
                desired > 0 && running == desired,
                format!("{running}/{desired} running"),
                desired.max(1),
            )
        }
        ServiceMode::ReplicatedJob {
            total_completions, ..
        } => {
            let complete = current
                .iter()
                .filter(|t| t.status.state == TaskState::Complete)
                .count() as u64;
            (
                complete >= *total_completions,
                format!("{complete}/{total_completions} completed"),
                *total_completions,
            )
        }
        ServiceMode::GlobalJob => {
            let complete = current
                .iter()
                .filter(|t| t.status.state == TaskState::Complete)
                .count() as u64;
            let desired = current
                .iter()
                .filter(|t| t.desired_state <= TaskState::Complete)
                .count() as u64;
            (
                desired > 0 && complete >= desired,
                format!("{complete}/{desired} completed"),
                desired.max(1),
            )
        }
    };
    if done {
        return Progress::Done(text);
    }
    // Failing: tasks keep failing and nothing is running, or the restart policy gave up (nothing live any more).
    let gave_up = live == 0 && !failed.is_empty();
    let keeps_failing = failed.len() as u64 >= (3 * want).max(3) && running == 0;
    if gave_up || keeps_failing {
        return Progress::Failed(format!("{text}; task failed: {last_error}"));
    }
    if !failed.is_empty() {
        return Progress::Converging(format!("{text} ({} failed: {last_error})", failed.len()));
    }
    Progress::Converging(text)
}

async fn wait_converged(
    c: &mut Client,
    stack: &str,
    names: &[String],
    timeout: Duration,
) -> CmdResult {
    let started = Instant::now();
    let started_ms = now_ms().saturating_sub(2_000);
    let tty = std::io::stdout().is_terminal();
    let mut shown: HashMap<String, Progress> = HashMap::new();
    loop {
        let (services, tasks, _) = fetch(c, stack).await?;
        let mut all_done = true;
        let mut failures = Vec::new();
        for name in names {
            let Some(svc) = services.iter().find(|s| &s.spec.name == name) else {
                all_done = false;
                continue;
            };
            let mine: Vec<&Task> = tasks.iter().filter(|t| t.service_id == svc.id).collect();
            let p = progress(svc, &mine, started_ms);
            if shown.get(name) != Some(&p) {
                let line = match &p {
                    Progress::Converging(t) => format!("{name}: {t}"),
                    Progress::Done(t) => format!("{name}: {t} (converged)"),
                    Progress::Failed(t) => format!("{name}: {t}"),
                };
                if tty {
                    println!("\x1b[2K{line}");
                } else {
                    println!("{line}");
                }
                shown.insert(name.clone(), p.clone());
            }
            match p {
                Progress::Done(_) => {}
                Progress::Failed(t) => {
                    failures.push(format!("service {name} failed to converge: {t}"))
                }
                Progress::Converging(_) => all_done = false,
            }
        }
        if !failures.is_empty() {
            return Err(failures.join("\n"));
        }
        if all_done {
            println!("Stack {stack} converged");
            return Ok(());
        }
        if started.elapsed() > timeout {
            return Err(format!(
                "stack {stack} did not converge within {}",
                crate::stack::units::format_duration(timeout)
            ));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// `stack ls`.
pub fn list(host: Option<String>, args: ListArgs) -> i32 {
    block_on(async move {
        let mut c = client(&host).await?;
        let mut stacks: Vec<Stack> = decode_all(
            c.list_stacks(control::Empty {})
                .await
                .map_err(rpc)?
                .into_inner()
                .json,
        )?;
        stacks.sort_by(|a, b| a.name.cmp(&b.name));
        if args.format.quiet {
            stacks.iter().for_each(|s| println!("{}", s.name));
            return Ok(());
        }
        let (services, _, _) = fetch(&mut c, "").await?;
        let mut table = Table::new(&["NAME", "SERVICES"]);
        for s in &stacks {
            let n = services
                .iter()
                .filter(|svc| {
                    svc.spec.labels.get(crate::model::STACK_NAMESPACE_LABEL) == Some(&s.name)
                })
                .count();
            if args.format.format == "json" {
                println!(
                    "{}",
                    serde_json::json!({"Name": s.name, "Services": n.to_string(), "Revision": s.revision})
                );
            } else {
                table.row(vec![s.name.clone(), n.to_string()]);
            }
        }
        if args.format.format != "json" {
            print!("{}", table.render());
        }
        Ok(())
    })
}

/// `stack ps`.
pub fn ps(host: Option<String>, args: StackNameArgs) -> i32 {
    block_on(async move {
        let mut c = client(&host).await?;
        let tasks: Vec<Task> = decode_all(
            c.list_tasks(control::TaskFilter {
                stack: args.name.clone(),
                ..Default::default()
            })
            .await
            .map_err(rpc)?
            .into_inner()
            .json,
        )?;
        print_ps(&mut c, tasks, &args.format).await
    })
}

/// `stack services`.
pub fn services(host: Option<String>, args: StackNameArgs) -> i32 {
    block_on(async move {
        let mut c = client(&host).await?;
        let stacks: Vec<Stack> = decode_all(
            c.list_stacks(control::Empty {})
                .await
                .map_err(rpc)?
                .into_inner()
                .json,
        )?;
        if !stacks.iter().any(|s| s.name == args.name) {
            return Err(format!("nothing found in stack: {}", args.name));
        }
        list_services(&mut c, &args.name, &args.format).await
    })
}

/// `stack rm`.
pub fn remove(host: Option<String>, args: StackNamesArgs) -> i32 {
    block_on(async move {
        let mut c = client(&host).await?;
        let mut failed = Vec::new();
        for name in &args.names {
            match c
                .remove_stack(control::ObjectRef {
                    id_or_name: name.clone(),
                })
                .await
            {
                Ok(reply) => reply.into_inner().json.iter().for_each(|l| println!("{l}")),
                Err(e) => failed.push(rpc(e)),
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(failed.join("\n"))
        }
    })
}
