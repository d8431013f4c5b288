//! `swarmctl secret ...`: create, ls, inspect (never shows data), rm.
//!
//! Must not: print secret data.

use std::io::Read;

use clap::{Args, Subcommand};

use super::common::*;
use super::output::{human_duration, short_id, Table};
use super::service::FormatArgs;
use crate::api::control;
use crate::manager::rules::{check_object_name, check_secret_data};
use crate::model::{object_version, Secret};

/// `swarmctl secret` subcommands.
#[derive(Subcommand, Debug)]
pub enum SecretCommand {
    /// Create a secret from a file or standard input (`-`).
    Create(CreateArgs),
    /// List secrets.
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Show secrets' metadata (never their data).
    Inspect(NamesArgs),
    /// Remove secrets (refused while a service uses one).
    #[command(alias = "remove")]
    Rm(NamesArgs),
}

/// Arguments of `secret create`.
#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Secret label (`key=value`).
    #[arg(short, long = "label")]
    pub labels: Vec<String>,
    /// The secret's name.
    pub name: String,
    /// File with the data, or `-` for standard input.
    pub file: String,
}

/// Arguments of `secret ls`.
#[derive(Args, Debug)]
pub struct LsArgs {
    /// Output format.
    #[command(flatten)]
    pub format: FormatArgs,
}

/// Secret names or ids.
#[derive(Args, Debug)]
pub struct NamesArgs {
    /// Secret names or ids.
    #[arg(required = true)]
    pub secrets: Vec<String>,
}

/// Runs one `secret` subcommand.
pub fn run(host: Option<String>, cmd: SecretCommand) -> i32 {
    block_on(async move {
        match cmd {
            SecretCommand::Create(a) => {
                let data = if a.file == "-" {
                    let mut buf = Vec::new();
                    std::io::stdin()
                        .read_to_end(&mut buf)
                        .map_err(|e| format!("cannot read standard input: {e}"))?;
                    buf
                } else {
                    std::fs::read(&a.file).map_err(|e| format!("cannot read {}: {e}", a.file))?
                };
                // the control API's own limits, checked before anything is sent
                check_object_name(&a.name).map_err(|e| e.to_string())?;
                check_secret_data(&data).map_err(|e| e.to_string())?;
                let labels = a
                    .labels
                    .iter()
                    .map(|l| {
                        let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
                        (k.to_string(), v.to_string())
                    })
                    .collect();
                let mut c = client(&host).await?;
                let reply = c
                    .create_secret(control::CreateSecretRequest {
                        name: a.name,
                        data,
                        labels,
                    })
                    .await
                    .map_err(rpc)?;
                let s: Secret = decode(&reply.into_inner().json)?;
                println!("{}", s.id);
                Ok(())
            }
            SecretCommand::Ls(a) => {
                let mut c = client(&host).await?;
                let mut secrets: Vec<Secret> = decode_all(
                    c.list_secrets(control::Empty {})
                        .await
                        .map_err(rpc)?
                        .into_inner()
                        .json,
                )?;
                secrets.sort_by(|a, b| {
                    (&a.spec.name, object_version(&a.spec.labels))
                        .cmp(&(&b.spec.name, object_version(&b.spec.labels)))
                });
                if a.format.quiet {
                    secrets.iter().for_each(|s| println!("{}", s.id));
                    return Ok(());
                }
                let now = now_ms();
                let mut table =
                    Table::new(&["ID", "NAME", "VERSION", "DRIVER", "CREATED", "UPDATED"]);
                for s in &secrets {
                    let created = format!(
                        "{} ago",
                        human_duration(now.saturating_sub(s.meta.created_at))
                    );
                    let updated = format!(
                        "{} ago",
                        human_duration(now.saturating_sub(s.meta.updated_at))
                    );
                    if a.format.format == "json" {
                        println!(
                            "{}",
                            serde_json::json!({"ID": s.id, "Name": s.spec.name, "Version": object_version(&s.spec.labels), "Driver": "", "CreatedAt": created, "UpdatedAt": updated, "Labels": s.spec.labels})
                        );
                    } else {
                        table.row(vec![
                            short_id(&s.id).into(),
                            s.spec.name.clone(),
                            object_version(&s.spec.labels).to_string(),
                            String::new(),
                            created,
                            updated,
                        ]);
                    }
                }
                if a.format.format != "json" {
                    print!("{}", table.render());
                }
                Ok(())
            }
            SecretCommand::Inspect(a) => {
                let mut c = client(&host).await?;
                let mut out = Vec::new();
                for s in &a.secrets {
                    let reply = c
                        .get_secret(control::ObjectRef {
                            id_or_name: s.clone(),
                        })
                        .await
                        .map_err(rpc)?;
                    let secret: Secret = decode(&reply.into_inner().json)?;
                    out.push(serde_json::json!({
                        "ID": secret.id,
                        "Version": {"Index": secret.meta.version},
                        "CreatedAt": secret.meta.created_at,
                        "UpdatedAt": secret.meta.updated_at,
                        "Spec": {"Name": secret.spec.name, "Labels": secret.spec.labels},
                    }));
                }
                println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
                Ok(())
            }
            SecretCommand::Rm(a) => {
                let mut c = client(&host).await?;
                let mut failed = Vec::new();
                for s in &a.secrets {
                    match c
                        .remove_secret(control::ObjectRef {
                            id_or_name: s.clone(),
                        })
                        .await
                    {
                        Ok(_) => println!("{s}"),
                        Err(e) => failed.push(rpc(e)),
                    }
                }
                all_ok(failed)
            }
        }
    })
}
