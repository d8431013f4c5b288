//! `swarmctl stack status NAME` and the GitOps columns of `stack ls`: a stack's SOURCE, REVISION, SYNC (from
//! the watcher's record on the stack object, the same on every manager), HEALTH (from its services and tasks)
//! and last error; per service its replicas and update state.
//!
//! Must not: change anything.

use super::StackNameArgs;
use crate::api::control;
use crate::cli::common::*;
use crate::gitops::decide::short;
use crate::gitops::health::{service_health, stack_health, Health};
use crate::model::{Service, Stack, StackSource, Task, STACK_NAMESPACE_LABEL};

/// Where a watched stack comes from, as shown: the file (`/srv/stacks/web.yml`) or `git:URL#branch:path/file`.
pub(super) fn shown_source(s: &StackSource) -> String {
    match s.source.strip_prefix("dir:") {
        Some(dir) => std::path::Path::new(dir)
            .join(&s.path)
            .display()
            .to_string(),
        None if s.source.ends_with(':') => format!("{}{}", s.source, s.path),
        None => format!("{}/{}", s.source, s.path),
    }
}

/// The stack's services and their tasks.
pub(super) fn stack_objects<'a>(
    stack: &str,
    services: &'a [Service],
    tasks: &'a [Task],
) -> (Vec<&'a Service>, Vec<&'a Task>) {
    let mine: Vec<&Service> = services
        .iter()
        .filter(|s| s.spec.labels.get(STACK_NAMESPACE_LABEL).map(String::as_str) == Some(stack))
        .collect();
    let ids: std::collections::BTreeSet<&str> = mine.iter().map(|s| s.id.as_str()).collect();
    let tasks = tasks
        .iter()
        .filter(|t| ids.contains(t.service_id.as_str()))
        .collect();
    (mine, tasks)
}

/// A stack's row values: (source, revision, sync, health, error).
pub(super) fn gitops_fields(
    stack: &Stack,
    services: &[&Service],
    tasks: &[&Task],
) -> (String, String, String, Health, String) {
    let health = stack_health(services, tasks);
    match &stack.source {
        Some(s) => (
            shown_source(s),
            s.revision.clone(),
            s.sync.name().to_string(),
            health,
            s.error.clone(),
        ),
        None => (
            String::new(),
            String::new(),
            String::new(),
            health,
            String::new(),
        ),
    }
}

/// The first line of an error, cut for a table cell.
pub(super) fn cell(error: &str) -> String {
    let line = error.lines().next().unwrap_or("");
    if line.chars().count() > 60 {
        format!("{}…", line.chars().take(59).collect::<String>())
    } else {
        line.to_string()
    }
}

/// `stack status NAME`.
pub fn status(host: Option<String>, args: StackNameArgs) -> i32 {
    block_on(async move {
        let mut c = client(&host).await?;
        let stacks: Vec<Stack> = decode_all(
            c.list_stacks(control::Empty {})
                .await
                .map_err(rpc)?
                .into_inner()
                .json,
        )?;
        let stack = stacks
            .into_iter()
            .find(|s| s.name == args.name)
            .ok_or_else(|| format!("nothing found in stack: {}", args.name))?;
        let (services, tasks, nodes) = crate::cli::service::fetch(&mut c, &args.name).await?;
        let (mine, my_tasks) = stack_objects(&stack.name, &services, &tasks);
        let (source, revision, sync, health, error) = gitops_fields(&stack, &mine, &my_tasks);
        let mut rows = Vec::new();
        for s in &mine {
            let owned: Vec<Task> = my_tasks.iter().map(|t| (*t).clone()).collect();
            let u = s.update_status.as_ref();
            rows.push(serde_json::json!({
                "Name": s.spec.name,
                "Replicas": replicas(s, &owned, &nodes),
                "Health": service_health(s, &my_tasks).name(),
                "UpdateState": u.map(|u| u.state.name()).unwrap_or(""),
                "UpdateMessage": u.map(|u| u.message.as_str()).unwrap_or(""),
            }));
        }
        let src = stack.source.as_ref();
        if args.format.format == "json" {
            let json = serde_json::json!({
                "Name": stack.name,
                "Revision": stack.revision,
                "Source": source,
                "SourceRevision": revision,
                "AppliedRevision": src.map(|s| s.applied_revision.as_str()).unwrap_or(""),
                "AppliedAt": src.map_or(0, |s| s.applied_at),
                "Sync": sync,
                "Health": health.name(),
                "Error": error,
                "Services": rows,
            });
            println!("{json}");
            return Ok(());
        }
        let none = |v: &str| {
            if v.is_empty() {
                "-".to_string()
            } else {
                v.to_string()
            }
        };
        println!("Name:        {}", stack.name);
        println!("Revision:    {} (deploys)", stack.revision);
        match src {
            Some(s) => {
                println!("Source:      {source}");
                println!("Source rev:  {}", none(&revision));
                let ago = if s.applied_at > 0 {
                    format!(
                        ", {} ago",
                        crate::cli::output::human_duration(now_ms().saturating_sub(s.applied_at))
                    )
                } else {
                    String::new()
                };
                println!("Applied:     {}{ago}", none(&short(&s.applied_revision)));
                println!("Sync:        {sync}");
            }
            None => println!("Source:      - (deployed by hand)"),
        }
        println!("Health:      {}", health.name());
        if !error.is_empty() {
            println!("Error:       {}", error.replace('\n', "\n             "));
        }
        let mut table =
            crate::cli::output::Table::new(&["SERVICE", "REPLICAS", "HEALTH", "UPDATE", "MESSAGE"]);
        for r in &rows {
            let text = |k: &str| r[k].as_str().unwrap_or("").to_string();
            table.row(vec![
                text("Name"),
                text("Replicas"),
                text("Health"),
                text("UpdateState"),
                text("UpdateMessage"),
            ]);
        }
        println!();
        print!("{}", table.render());
        Ok(())
    })
}
