//! `swarmctl network ...`: ls (docker's columns), inspect (docker's JSON, with the IPAM config), create, rm
//! (refused while a service or task uses the network, with the reason).
//!
//! Must not: reach the store; every check that matters is the manager's (the CLI only parses flags).

use clap::{Args, Subcommand};

use super::common::*;
use super::output::{short_id, Table};
use super::service::FormatArgs;
use crate::api::control;
use crate::manager::rules::check_object_name;
use crate::model::Network;

/// `swarmctl network` subcommands.
#[derive(Subcommand, Debug)]
pub enum NetworkCommand {
    /// List networks.
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Show networks in detail (JSON, with the allocated subnet and gateway).
    Inspect(NamesArgs),
    /// Create a network (its subnet comes from the cluster's default address pool unless --subnet says).
    Create(CreateArgs),
    /// Remove networks (refused while a service or task uses one).
    #[command(alias = "remove")]
    Rm(NamesArgs),
}

/// Arguments of `network ls`.
#[derive(Args, Debug)]
pub struct LsArgs {
    /// Output format.
    #[command(flatten)]
    pub format: FormatArgs,
}

/// Network names or ids.
#[derive(Args, Debug)]
pub struct NamesArgs {
    /// Network names or ids.
    #[arg(required = true)]
    pub networks: Vec<String>,
}

/// Arguments of `network create`.
#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Driver (overlay).
    #[arg(short, long, default_value = "overlay")]
    pub driver: String,
    /// Let standalone containers attach.
    #[arg(long)]
    pub attachable: bool,
    /// No outside connectivity.
    #[arg(long)]
    pub internal: bool,
    /// The subnet, CIDR (e.g. 10.10.0.0/24).
    #[arg(long)]
    pub subnet: Vec<String>,
    /// Network label (`key=value`).
    #[arg(short, long = "label")]
    pub labels: Vec<String>,
    /// The network's name.
    pub name: String,
}

/// A network's scope as docker shows it.
pub fn scope(n: &Network) -> String {
    n.allocation
        .as_ref()
        .map_or("swarm", |a| a.scope.as_str())
        .to_string()
}

/// docker's `network inspect` object for `n`.
pub fn inspect_json(n: &Network) -> serde_json::Value {
    let config: Vec<serde_json::Value> = match &n.allocation {
        Some(a) => vec![serde_json::json!({"Subnet": a.subnet, "Gateway": a.gateway})],
        None => n
            .spec
            .subnets
            .iter()
            .map(|s| serde_json::json!({ "Subnet": s }))
            .collect(),
    };
    let mut options = n.spec.driver_opts.clone();
    if let Some(a) = &n.allocation {
        options.insert(
            "com.docker.network.driver.overlay.vxlanid_list".into(),
            a.vni.to_string(),
        );
    }
    serde_json::json!({
        "Name": n.spec.name,
        "Id": n.id,
        "Created": n.meta.created_at,
        "Scope": scope(n),
        "Driver": n.spec.driver,
        "EnableIPv6": false,
        "IPAM": {"Driver": "default", "Options": null, "Config": config},
        "Internal": n.spec.internal,
        "Attachable": n.spec.attachable,
        "Ingress": n.spec.ingress,
        "Options": options,
        "Labels": n.spec.labels,
    })
}

/// Runs one `network` subcommand.
pub fn run(host: Option<String>, cmd: NetworkCommand) -> i32 {
    block_on(async move {
        let mut c = client(&host).await?;
        match cmd {
            NetworkCommand::Ls(a) => {
                let reply = c.list_networks(control::Empty {}).await.map_err(rpc)?;
                let mut nets: Vec<Network> = decode_all(reply.into_inner().json)?;
                nets.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
                if a.format.quiet {
                    nets.iter().for_each(|n| println!("{}", n.id));
                    return Ok(());
                }
                if a.format.format == "json" {
                    for n in &nets {
                        println!(
                            "{}",
                            serde_json::json!({"ID": n.id, "Name": n.spec.name, "Driver": n.spec.driver, "Scope": scope(n), "Labels": n.spec.labels})
                        );
                    }
                    return Ok(());
                }
                let mut table = Table::new(&["NETWORK ID", "NAME", "DRIVER", "SCOPE"]);
                for n in &nets {
                    table.row(vec![
                        short_id(&n.id).into(),
                        n.spec.name.clone(),
                        n.spec.driver.clone(),
                        scope(n),
                    ]);
                }
                print!("{}", table.render());
                Ok(())
            }
            NetworkCommand::Inspect(a) => {
                let mut out = Vec::new();
                for n in &a.networks {
                    let reply = c
                        .get_network(control::ObjectRef {
                            id_or_name: n.clone(),
                        })
                        .await
                        .map_err(rpc)?;
                    out.push(inspect_json(&decode(&reply.into_inner().json)?));
                }
                println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
                Ok(())
            }
            NetworkCommand::Create(a) => {
                check_object_name(&a.name).map_err(|e| e.to_string())?;
                let labels = a
                    .labels
                    .iter()
                    .map(|l| {
                        let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
                        (k.to_string(), v.to_string())
                    })
                    .collect();
                let reply = c
                    .create_network(control::CreateNetworkRequest {
                        name: a.name,
                        driver: a.driver,
                        attachable: a.attachable,
                        internal: a.internal,
                        subnets: a.subnet,
                        labels,
                    })
                    .await
                    .map_err(rpc)?;
                let n: Network = decode(&reply.into_inner().json)?;
                println!("{}", n.id);
                Ok(())
            }
            NetworkCommand::Rm(a) => {
                let mut failed = Vec::new();
                for n in &a.networks {
                    match c
                        .remove_network(control::ObjectRef {
                            id_or_name: n.clone(),
                        })
                        .await
                    {
                        Ok(_) => println!("{n}"),
                        Err(e) => failed.push(rpc(e)),
                    }
                }
                all_ok(failed)
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Meta, NetworkAllocation, NetworkSpec};

    #[test]
    fn inspect_shows_the_ipam_config_and_vni_like_docker() {
        let n = Network {
            id: "abc".into(),
            meta: Meta::default(),
            spec: NetworkSpec {
                name: "app_default".into(),
                driver: "overlay".into(),
                ..NetworkSpec::default()
            },
            allocation: Some(NetworkAllocation {
                subnet: "10.0.1.0/24".into(),
                gateway: "10.0.1.1".into(),
                vni: 4097,
                scope: "swarm".into(),
                next_host: 3,
            }),
        };
        let j = inspect_json(&n);
        assert_eq!(j["IPAM"]["Config"][0]["Subnet"], "10.0.1.0/24");
        assert_eq!(j["IPAM"]["Config"][0]["Gateway"], "10.0.1.1");
        assert_eq!(
            j["Options"]["com.docker.network.driver.overlay.vxlanid_list"],
            "4097"
        );
        assert_eq!(
            (j["Scope"].as_str(), j["Driver"].as_str()),
            (Some("swarm"), Some("overlay"))
        );
    }
}
