//! `swarmctl stack ls | ps | services`: listing stacks, their tasks and their services.
//!
//! Must not: change anything.

use super::status::{cell, gitops_fields, stack_objects};
use super::StackNameArgs;
use crate::api::control;
use crate::cli::common::*;
use crate::cli::output::Table;
use crate::cli::service::{fetch, list as list_services, print_ps, ListArgs};
use crate::gitops::decide::short;
use crate::model::{Stack, Task};

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
        let (services, tasks, _) = fetch(&mut c, "").await?;
        let mut table = Table::new(&[
            "NAME", "SERVICES", "SOURCE", "REVISION", "SYNC", "HEALTH", "ERROR",
        ]);
        for s in &stacks {
            let (mine, my_tasks) = stack_objects(&s.name, &services, &tasks);
            let n = mine.len();
            let (source, revision, sync, health, error) = gitops_fields(s, &mine, &my_tasks);
            if args.format.format == "json" {
                println!(
                    "{}",
                    serde_json::json!({
                        "Name": s.name, "Services": n.to_string(), "Revision": s.revision, "Source": source,
                        "SourceRevision": revision, "Sync": sync, "Health": health.name(), "Error": error,
                    })
                );
            } else {
                let rev = if revision.is_empty() {
                    s.revision.to_string()
                } else {
                    short(&revision)
                };
                table.row(vec![
                    s.name.clone(),
                    n.to_string(),
                    source,
                    rev,
                    sync,
                    health.name().to_string(),
                    cell(&error),
                ]);
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
