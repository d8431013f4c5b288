//! `swarmctl stack diff`: what a deploy of these files would change, changing nothing.
//!
//! Must not: interpret stack files (that is `stack::load` / `stack::convert`).

use super::plan::{load_request, plan_items, print_plan};
use super::DiffArgs;
use crate::cli::common::*;
use crate::model::PlanItem;

/// `stack diff`: prints the plan; exit 0 when there is nothing to do, 2 when there are changes, 1 on error.
pub fn diff(host: Option<String>, args: DiffArgs) -> i32 {
    let request = match load_request(&host, &args.files, &args.name, args.prune, true) {
        Ok(r) => r,
        Err(problems) => {
            problems.iter().for_each(|p| eprintln!("error: {p}"));
            return 1;
        }
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
