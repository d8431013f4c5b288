//! `swarmctl stack history | rollback`: the revisions the cluster keeps for a stack, and re-applying one.
//!
//! Must not: read stack files (a rollback re-applies what the server stored).

use super::plan::report_and_wait;
use super::{RollbackArgs, StackNameArgs};
use crate::api::control;
use crate::cli::common::*;
use crate::cli::output::{human_duration, Table};
use crate::model::StackRevision;

/// `stack history NAME`.
pub fn history(host: Option<String>, args: StackNameArgs) -> i32 {
    block_on(async move {
        let mut c = client(&host).await?;
        let revs: Vec<StackRevision> = decode_all(
            c.stack_history(control::ObjectRef {
                id_or_name: args.name.clone(),
            })
            .await
            .map_err(rpc)?
            .into_inner()
            .json,
        )?;
        if args.format.quiet {
            revs.iter().for_each(|r| println!("{}", r.revision));
            return Ok(());
        }
        let now = now_ms();
        let mut table = Table::new(&["REVISION", "DEPLOYED", "CHANGES"]);
        for r in &revs {
            let when = format!("{} ago", human_duration(now.saturating_sub(r.deployed_at)));
            if args.format.format == "json" {
                println!(
                    "{}",
                    serde_json::json!({"Revision": r.revision, "DeployedAt": r.deployed_at, "Changes": r.changes})
                );
            } else {
                table.row(vec![r.revision.to_string(), when, r.changes.join("; ")]);
            }
        }
        if args.format.format != "json" {
            print!("{}", table.render());
        }
        Ok(())
    })
}

/// `stack rollback NAME [--revision N]`.
pub fn rollback(host: Option<String>, args: RollbackArgs) -> i32 {
    let timeout = match crate::stack::units::parse_duration(&args.timeout) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: --timeout: {e}");
            return 1;
        }
    };
    block_on(async move {
        let mut c = client(&host).await?;
        let reply = c
            .rollback_stack(control::RollbackStackRequest {
                name: args.name.clone(),
                revision: args.revision.unwrap_or(0),
                dry_run: args.dry_run,
            })
            .await
            .map_err(rpc)?
            .into_inner();
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
