//! `swarmctl stack rm`: removes stacks (the cluster removes their services, secrets, configs and networks).

use super::StackNamesArgs;
use crate::api::control;
use crate::cli::common::*;

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
