//! `swarmctl stack watch DIR | --git URL`: the GitOps watcher in the foreground, a long-running client of the
//! control API (reconnecting after any failure, so it goes on through a leader change or a manager restart).
//! Rounds run on start, on file events (debounced), on a valid webhook push, and every `--interval` (a full
//! rescan and drift check; for git, a fetch first). The logic is `gitops`; this file is the glue.
//!
//! Must not: decide anything about a stack (that is `gitops::decide`).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use tokio::sync::mpsc;

use crate::api::control;
use crate::cli::common::*;
use crate::gitops::{
    self, git::Repo, webhook::Hook, Cluster, ClusterError, Options, Source, Watcher,
};
use crate::model::{Limits, PlanItem, Service, Stack, StackSource};

/// Arguments of `stack watch`.
#[derive(Args, Debug)]
pub struct WatchArgs {
    /// The directory of stacks: each `NAME.yml`/`NAME.yaml`, or each folder `NAME/` with a `stack.yml` (and
    /// optional `stack.override.yml`, `.env`), is the stack NAME.
    #[arg(required_unless_present = "git", conflicts_with = "git")]
    pub dir: Option<PathBuf>,
    /// Watch a git repository instead (cloned with the `git` binary: credential helpers and SSH config apply).
    #[arg(long)]
    pub git: Option<String>,
    /// The branch to follow (default: the remote's default branch).
    #[arg(long, requires = "git")]
    pub branch: Option<String>,
    /// The folder of the repository that holds the stacks.
    #[arg(long, requires = "git", default_value = "")]
    pub path: String,
    /// Where the clone is kept (default: ~/.cache/swarmctl/git).
    #[arg(long, requires = "git")]
    pub cache_dir: Option<PathBuf>,
    /// Remove stacks this watcher created whose file or folder is gone (never a stack deployed by hand).
    #[arg(long)]
    pub prune: bool,
    /// Report changes made in the cluster by hand as OutOfSync instead of reverting them.
    #[arg(long)]
    pub no_self_heal: bool,
    /// Full rescan, drift check (and git fetch) every this long.
    #[arg(long, default_value = "30s")]
    pub interval: String,
    /// Listen for push webhooks on ADDR (e.g. 127.0.0.1:9000); needs --webhook-secret.
    #[arg(long, requires = "git", requires = "webhook_secret")]
    pub webhook_listen: Option<String>,
    /// The file holding the webhook's shared secret (checked as GitHub's X-Hub-Signature-256).
    #[arg(long, requires = "webhook_listen")]
    pub webhook_secret: Option<PathBuf>,
}

/// The control API as the watcher's `Cluster`, reconnecting after any failure.
struct Api {
    host: Option<String>,
    client: Option<Client>,
}

impl Api {
    async fn c(&mut self) -> Result<&mut Client, ClusterError> {
        if self.client.is_none() {
            let c = client(&self.host)
                .await
                .map_err(ClusterError::Unreachable)?;
            self.client = Some(c);
        }
        self.client
            .as_mut()
            .ok_or_else(|| ClusterError::Unreachable("not connected".into()))
    }

    fn fail(&mut self, status: tonic::Status) -> ClusterError {
        let unreachable = matches!(
            status.code(),
            tonic::Code::Unavailable
                | tonic::Code::Unknown
                | tonic::Code::Cancelled
                | tonic::Code::DeadlineExceeded
                | tonic::Code::Unimplemented
        );
        if unreachable {
            self.client = None;
            ClusterError::Unreachable(rpc(status))
        } else {
            ClusterError::Refused(rpc(status))
        }
    }
}

fn malformed(e: String) -> ClusterError {
    ClusterError::Refused(e)
}

impl Cluster for Api {
    async fn stacks(&mut self) -> Result<Vec<Stack>, ClusterError> {
        let r = self.c().await?.list_stacks(control::Empty {}).await;
        let r = r.map_err(|s| self.fail(s))?;
        decode_all(r.into_inner().json).map_err(malformed)
    }

    async fn services(&mut self) -> Result<Vec<Service>, ClusterError> {
        let r = self
            .c()
            .await?
            .list_services(control::ServiceFilter::default())
            .await;
        let r = r.map_err(|s| self.fail(s))?;
        decode_all(r.into_inner().json).map_err(malformed)
    }

    async fn limits(&mut self) -> Result<Limits, ClusterError> {
        let r = self.c().await?.info(control::Empty {}).await;
        let info = r.map_err(|s| self.fail(s))?.into_inner();
        let info: serde_json::Value = decode(&info.json).map_err(malformed)?;
        Ok(serde_json::from_value::<Limits>(info["Limits"].clone()).unwrap_or_default())
    }

    async fn deploy(
        &mut self,
        request: control::DeployStackRequest,
    ) -> Result<Vec<PlanItem>, ClusterError> {
        let r = self.c().await?.deploy_stack(request).await;
        let reply = r.map_err(|s| self.fail(s))?.into_inner();
        if reply.plan_json.is_empty() {
            return Ok(Vec::new());
        }
        decode(&reply.plan_json).map_err(malformed)
    }

    async fn record(&mut self, name: &str, source: &StackSource) -> Result<(), ClusterError> {
        let r = self
            .c()
            .await?
            .record_stack_source(control::RecordStackSourceRequest {
                name: name.into(),
                source_json: crate::api::to_json(source),
            })
            .await;
        r.map_err(|s| self.fail(s))?;
        Ok(())
    }

    async fn remove(&mut self, name: &str) -> Result<(), ClusterError> {
        let r = self
            .c()
            .await?
            .remove_stack(control::ObjectRef {
                id_or_name: name.into(),
            })
            .await;
        r.map_err(|s| self.fail(s))?;
        Ok(())
    }
}

fn default_cache() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("swarmctl").join("git")
}

fn say(line: &str) {
    println!("{line}");
}

/// `stack watch`: runs until interrupted (exit 0), or exits 2 on invalid arguments.
pub fn watch(host: Option<String>, args: WatchArgs) -> i32 {
    let interval = match crate::stack::units::parse_duration(&args.interval) {
        Ok(d) if d >= Duration::from_millis(100) => d,
        Ok(_) => {
            eprintln!("error: --interval: at least 100ms");
            return 2;
        }
        Err(e) => {
            eprintln!("error: --interval: {e}");
            return 2;
        }
    };
    let secret = match &args.webhook_secret {
        Some(f) => match gitops::webhook::read_secret(f) {
            Ok(s) => Some(s),
            Err(e) => {
                eprintln!("error: {e}");
                return 2;
            }
        },
        None => None,
    };
    let source = match (&args.dir, &args.git) {
        (Some(dir), _) => match std::fs::canonicalize(dir) {
            Ok(d) if d.is_dir() => Source::Dir(d),
            Ok(d) => {
                eprintln!("error: {} is not a directory", d.display());
                return 2;
            }
            Err(e) => {
                eprintln!("error: {}: {e}", dir.display());
                return 2;
            }
        },
        (None, Some(url)) => Source::Git(Repo::new(
            url,
            args.branch.clone(),
            &args.path,
            &args.cache_dir.clone().unwrap_or_else(default_cache),
        )),
        (None, None) => {
            eprintln!("error: give a directory or --git URL");
            return 2;
        }
    };
    let options = Options {
        prune: args.prune,
        self_heal: !args.no_self_heal,
    };
    block_on(async move {
        let mut watcher = Watcher::new(source, options, Box::new(say));
        let mut api = Api { host, client: None };
        let (ev_tx, mut ev_rx) = mpsc::unbounded_channel();
        let _watch = match &args.dir {
            Some(_) => {
                let dir = match &args.dir {
                    Some(d) => std::fs::canonicalize(d).map_err(|e| e.to_string())?,
                    None => PathBuf::new(),
                };
                Some(gitops::events::watch(
                    &dir,
                    Duration::from_millis(150),
                    ev_tx,
                )?)
            }
            None => None,
        };
        let (hook_tx, mut hook_rx) = mpsc::unbounded_channel();
        if let (Some(addr), Some(secret)) = (&args.webhook_listen, secret) {
            let (local, server) = gitops::webhook::serve(addr, secret, hook_tx).await?;
            say(&format!("webhook: listening on http://{local}"));
            tokio::spawn(server);
        }
        say(&format!(
            "watching {} (every {}{}{})",
            watcher.source_id,
            crate::stack::units::format_duration(interval),
            if args.prune { ", prune" } else { "" },
            if args.no_self_heal {
                ", no self-heal"
            } else {
                ""
            },
        ));
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut down = false;
        loop {
            let only: Option<BTreeSet<String>> = tokio::select! {
                _ = tick.tick() => {
                    if let Err(e) = watcher.fetch().await {
                        say(&format!("cannot fetch: {e}"));
                    }
                    None
                }
                Some(names) = ev_rx.recv() => names,
                Some(hook) = hook_rx.recv() => match hook {
                    Hook::Refused(m) => {
                        say(&m);
                        continue;
                    }
                    Hook::Sync => {
                        say("webhook: push received, syncing");
                        match watcher.fetch().await {
                            Ok(changed) => changed,
                            Err(e) => {
                                say(&format!("cannot fetch: {e}"));
                                continue;
                            }
                        }
                    }
                },
                _ = tokio::signal::ctrl_c() => return Ok(()),
            };
            match watcher.round(&mut api, only.as_ref()).await {
                Ok(()) if down => {
                    down = false;
                    say("cluster reachable again");
                }
                Ok(()) => {}
                Err(e) if !down => {
                    down = true;
                    say(&format!("cannot reach the cluster (retrying): {e}"));
                }
                Err(_) => {}
            }
        }
    })
}
