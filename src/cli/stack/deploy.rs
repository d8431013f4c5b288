//! `swarmctl stack deploy | diff | ls | ps | services | rm`: the commands that send a stack to the cluster (or ask
//! what sending it would change) and list it.
//!
//! Must not: interpret stack files (that is `stack::load` / `stack::convert`) or decide convergence on the server.

use std::time::Duration;

use super::common::*;
use super::output::Table;
use super::service::{fetch, list as list_services, print_ps, ListArgs};
use super::stack::{DeployArgs, DiffArgs, StackNameArgs, StackNamesArgs};
use super::stack_wait::wait_converged;
use crate::api::{control, to_json};
use crate::model::{PlanAction, PlanItem, Stack, Task};
use crate::stack::{self, LoadOptions};

/// Loads and converts the files into a deploy request (errors already printed).
fn load_request(
    files: &[std::path::PathBuf],
    name: &str,
    prune: bool,
    dry_run: bool,
) -> Result<control::DeployStackRequest, ()> {
    let loaded = match stack::load(files, &LoadOptions::default()) {
        Ok(l) => l,
        Err(e) => {
            for p in &e.problems {
                eprintln!("error: {p}");
            }
            return Err(());
        }
    };
    for w in &loaded.warnings {
        eprintln!("{w}");
    }
    let spec = match stack::convert::convert(name, &loaded.stack) {
        Ok(s) => s,
        Err(e) => {
            for p in &e.problems {
                eprintln!("error: {p}");
            }
            return Err(());
        }
    };
    let files = loaded
        .sources
        .iter()
        .map(|(name, text)| control::StackFile {
            name: name.clone(),
            text: text.clone(),
        })
        .collect();
    Ok(control::DeployStackRequest {
        spec_json: to_json(&spec),
        files,
        prune,
        dry_run,
    })
}

/// The plan items of a reply.
pub(super) fn plan_items(reply: &control::DeployStackResponse) -> Result<Vec<PlanItem>, String> {
    if reply.plan_json.is_empty() {
        return Ok(Vec::new());
    }
    decode(&reply.plan_json)
}

/// Prints a plan, one object a line: `update    service demo_web  image: web:1 → web:2`.
pub(super) fn print_plan(items: &[PlanItem], show_unchanged: bool) {
    for i in items {
        let verb = match i.action {
            PlanAction::Create => "create",
            PlanAction::Update => "update",
            PlanAction::Remove => "remove",
            PlanAction::Unchanged => "unchanged",
            PlanAction::Left => "left",
        };
        if i.action == PlanAction::Unchanged && !show_unchanged {
            continue;
        }
        let mut line = format!("{verb:<10}{:<8}{}", i.kind, i.name);
        if i.action == PlanAction::Left {
            line.push_str("  (not pruned: the files no longer name it)");
        }
        if !i.fields.is_empty() {
            line.push_str("  ");
            line.push_str(&i.fields.join("; "));
        }
        println!("{}", line.trim_end());
    }
}

/// Prints what an applied (or planned) deploy does, then waits for the changed services unless `detach`.
pub(super) async fn report_and_wait(
    c: &mut Client,
    stack: &str,
    reply: control::DeployStackResponse,
    dry_run: bool,
    detach: bool,
    timeout: Duration,
) -> CmdResult {
    let items = plan_items(&reply)?;
    let changed = items.iter().any(PlanItem::is_change);
    if !changed {
        println!("Stack {stack} is up to date: nothing to change");
        print_plan(&items, false);
        return Ok(());
    }
    if dry_run {
        println!("Stack {stack}: plan (dry run, nothing changed)");
        print_plan(&items, true);
        return Ok(());
    }
    for i in &items {
        let verb = match i.action {
            PlanAction::Create => "Creating",
            PlanAction::Update => "Updating",
            PlanAction::Remove => "Removing",
            PlanAction::Left => "Leaving",
            PlanAction::Unchanged => continue,
        };
        let mut line = format!("{verb} {} {}", i.kind, i.name);
        if i.action == PlanAction::Left {
            line.push_str(" (not pruned)");
        }
        if !i.fields.is_empty() {
            line.push_str(&format!(" ({})", i.fields.join("; ")));
        }
        println!("{line}");
    }
    if reply.revision > 0 {
        println!("Stack {stack} is at revision {}", reply.revision);
    }
    if detach || reply.changed_services.is_empty() {
        return Ok(());
    }
    wait_converged(c, stack, &reply.changed_services, timeout).await
}

/// `stack deploy`.
pub fn deploy(host: Option<String>, args: DeployArgs) -> i32 {
    let Ok(request) = load_request(&args.files, &args.name, args.prune, args.dry_run) else {
        return 1;
    };
    let timeout = match stack::units::parse_duration(&args.timeout) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: --timeout: {e}");
            return 1;
        }
    };
    block_on(async move {
        let mut c = client(&host).await?;
        let reply = c.deploy_stack(request).await.map_err(rpc)?.into_inner();
        report_and_wait(
            &mut c,
            &args.name,
            reply,
            args.dry_run,
            args.detach,
            timeout,
        )
        .await
    })
}

/// `stack diff`: prints the plan; exit 0 when there is nothing to do, 2 when there are changes, 1 on error.
pub fn diff(host: Option<String>, args: DiffArgs) -> i32 {
    let Ok(request) = load_request(&args.files, &args.name, args.prune, true) else {
        return 1;
    };
    let mut changed = false;
    let code = block_on(async {
        let mut c = client(&host).await?;
        let reply = c.deploy_stack(request).await.map_err(rpc)?.into_inner();
        let items = plan_items(&reply)?;
        changed = items.iter().any(PlanItem::is_change);
        print_plan(&items, true);
        if !changed {
            println!("Stack {} is up to date: nothing to change", args.name);
        }
        Ok(())
    });
    match (code, changed) {
        (0, true) => 2,
        (code, _) => code,
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
        all_ok(failed)
    })
}
