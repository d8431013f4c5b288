//! `swarmctl stack deploy`: sends a stack to the cluster, prints what changes and waits for it to converge.
//!
//! Must not: interpret stack files (that is `stack::load` / `stack::convert`) or decide convergence on the server.

use super::plan::{load_request, report_and_wait};
use super::DeployArgs;
use crate::cli::common::*;
use crate::stack;

/// `stack deploy`.
pub fn deploy(host: Option<String>, args: DeployArgs) -> i32 {
    let Ok(request) = load_request(&host, &args.files, &args.name, args.prune, args.dry_run) else {
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
