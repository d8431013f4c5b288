//! What `stack deploy`, `diff` and `rollback` share: turning stack files into a deploy request, and printing
//! (then waiting for) the plan the cluster answers with.
//!
//! Must not: interpret stack files (that is `stack::load` / `stack::convert`) or decide convergence on the server.

use std::time::Duration;

use super::wait::wait_converged;
use crate::api::{control, to_json};
use crate::cli::common::*;
use crate::model::{Limits, PlanAction, PlanItem};
use crate::stack::{self, LoadOptions};

/// The cluster's limits, so the files are checked against what the cluster allows (the defaults when it cannot
/// be asked: the deploy itself then reports why).
fn cluster_limits(host: &Option<String>) -> Limits {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return Limits::default();
    };
    let ask = async {
        let mut c = client(host).await.ok()?;
        let info = c.info(control::Empty {}).await.ok()?.into_inner();
        let info: serde_json::Value = decode(&info.json).ok()?;
        serde_json::from_value::<Limits>(info["Limits"].clone()).ok()
    };
    rt.block_on(ask).unwrap_or_default()
}

/// Loads and converts the files into a deploy request, checked against the limits of the cluster at `host`;
/// else the problems (`file:line: key: message`), one a line. Warnings go to stderr.
pub(super) fn load_request(
    host: &Option<String>,
    files: &[std::path::PathBuf],
    name: &str,
    prune: bool,
    dry_run: bool,
) -> Result<control::DeployStackRequest, Vec<String>> {
    let limits = cluster_limits(host);
    let options = LoadOptions {
        limits: limits.clone(),
        ..LoadOptions::default()
    };
    let loaded = match stack::load(files, &options) {
        Ok(l) => l,
        Err(e) => return Err(e.problems.iter().map(|p| p.to_string()).collect()),
    };
    for w in &loaded.warnings {
        eprintln!("{w}");
    }
    let spec = match stack::convert::convert_within(name, &loaded.stack, &limits) {
        Ok(s) => s,
        Err(e) => return Err(e.problems.iter().map(|p| p.to_string()).collect()),
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
        source_json: String::new(),
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
        let verb = i.action.name();
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
    if report(stack, &reply, dry_run)? && !detach && !reply.changed_services.is_empty() {
        return wait_converged(c, stack, &reply.changed_services, timeout).await;
    }
    Ok(())
}

/// Prints what an applied (or planned) deploy does; whether it changed something (so there is a wait).
pub(super) fn report(
    stack: &str,
    reply: &control::DeployStackResponse,
    dry_run: bool,
) -> Result<bool, String> {
    let items = plan_items(reply)?;
    let changed = items.iter().any(PlanItem::is_change);
    if !changed {
        println!("Stack {stack} is up to date: nothing to change");
        print_plan(&items, false);
        return Ok(false);
    }
    if dry_run {
        println!("Stack {stack}: plan (dry run, nothing changed)");
        print_plan(&items, true);
        return Ok(false);
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
    Ok(true)
}
