//! A node changing role in place (`node promote` / `node demote`), keeping its id and its running tasks:
//!
//! - **promoted worker**: its certificate is renewed (the CA gives the role the managers set: manager), it joins
//!   the Raft group as any manager does (`manager_join`), then `worker.json` goes;
//! - **demoted manager**: once it is no longer a Raft voter (or after a short wait), it signs itself a worker
//!   certificate with the cluster CA it still holds, writes `worker.json`, and only then removes `node.json`,
//!   the CA key, the data key and its Raft data.
//!
//! A crash in between leaves both identity files; the newer one wins at the next start ([`settle`]).
//!
//! Must not: stop or restart tasks (the executor re-adopts them in the node's next role).

use std::path::Path;

use super::join::Joined;
use super::renew::{self, CertFiles};
use super::{identity, raft_dir, worker, NodeConfig, NodeError};
use crate::pki::{self, NodeCertSpec, NodeCredentials, NodeKey, NodeRole};

fn failed(message: String) -> NodeError {
    NodeError::Worker(format!("changing this node's role: {message}"))
}

/// Resolves a state directory holding both identities (a role change cut by a crash): the newer file wins.
pub(crate) fn settle(dir: &Path) {
    let (w, n) = (worker::worker_file(dir), identity::node_file(dir));
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if let (Some(wt), Some(nt)) = (mtime(&w), mtime(&n)) {
        if wt >= nt {
            tracing::warn!("finishing an interrupted demotion");
            remove_manager_files(dir);
        } else {
            tracing::warn!("finishing an interrupted promotion");
            let _ = std::fs::remove_file(&w);
        }
    }
}

fn remove_manager_files(dir: &Path) {
    let _ = std::fs::remove_file(identity::node_file(dir));
    let _ = std::fs::remove_file(dir.join("certs").join("ca.key"));
    let _ = std::fs::remove_file(dir.join("data.key"));
    let _ = std::fs::remove_dir_all(dir.join("raft"));
}

/// A promoted worker becomes a manager (see the module doc).
pub(crate) async fn promote(
    config: &NodeConfig,
    ips: &[std::net::IpAddr],
) -> Result<(), NodeError> {
    let dir = &config.state_dir;
    let file = worker::read_worker_file(dir).map_err(failed)?;
    let ca_pem = std::fs::read_to_string(dir.join("certs").join("ca.crt"))
        .map_err(|e| failed(format!("certs/ca.crt: {e}")))?;
    let roots = pki::certs_from_pem(&ca_pem, "certs/ca.crt")?;
    let creds = CertFiles::in_dir(dir).load().map_err(failed)?;
    let tls: renew::ClientTls =
        std::sync::Arc::new(std::sync::RwLock::new(pki::client_config(&roots, &creds)?));
    let mut last = String::from("no manager known");
    for addr in file.all_managers() {
        match renew::renew_once(&addr, &file.cluster_id, &tls).await {
            Ok(new) if new.identity().role == NodeRole::Manager => {
                super::manager_join::join_as_manager(
                    config,
                    Joined { ca_pem, creds: new },
                    &addr,
                    ips,
                )
                .await?;
                let _ = std::fs::remove_file(worker::worker_file(dir));
                return Ok(());
            }
            Ok(_) => last = format!("{addr} still gives this node a worker certificate"),
            Err(e) => last = format!("{addr}: {e}"),
        }
    }
    Err(failed(format!("cannot get a manager certificate: {last}")))
}

/// A demoted manager becomes a worker of the managers at `managers` (see the module doc).
pub(crate) fn demote(
    config: &NodeConfig,
    id: &identity::Identity,
    managers: &[String],
) -> Result<(), NodeError> {
    let dir = &config.state_dir;
    let key = NodeKey::generate()?;
    let spec = NodeCertSpec::new(id.node_id.clone(), NodeRole::Worker)
        .with_validity(pki::NODE_CERT_VALIDITY);
    let cert = id.ca.sign_node_csr(
        &key.csr_pem(&id.node_id)?,
        &spec,
        std::time::SystemTime::now(),
    )?;
    let creds = NodeCredentials::new(&cert, &key)?;
    CertFiles::in_dir(dir).store(&creds)?;
    worker::write_worker_file(dir, &id.node_id, &id.cluster_id, managers)?;
    remove_manager_files(dir);
    let _ = raft_dir(config);
    println!(
        "This node was demoted: it is now a worker (node {}).",
        id.node_id
    );
    Ok(())
}

/// Completes once this manager was demoted (its node is a worker in the store) and has left the Raft voters —
/// or 10 s after it saw the demotion, if the leader could not take it out (it then leaves by stopping).
pub(crate) async fn demotion(
    store: crate::store::Store,
    raft: std::sync::Arc<crate::store::raft::RaftNode>,
    node_id: String,
) {
    let mut changes = store.subscribe();
    let mut seen: Option<tokio::time::Instant> = None;
    // a manager that is replaying the log sees its node as a worker until the entry that promoted it: only a
    // manager that has been a voter in this run reacts
    let mut was_voter = false;
    loop {
        changes.mark_seen();
        was_voter |= raft.metrics().voters.contains(&raft.id());
        let worker = store.view(|s| {
            s.node(&node_id)
                .is_some_and(|n| n.spec.role == crate::model::NodeRole::Worker)
        });
        if worker && was_voter {
            let since = *seen.get_or_insert_with(tokio::time::Instant::now);
            let voter = raft.metrics().voters.contains(&raft.id());
            if !voter || since.elapsed() > std::time::Duration::from_secs(10) {
                tracing::info!("this manager was demoted: it goes on as a worker");
                return;
            }
        } else {
            seen = None;
        }
        tokio::select! {
            _ = changes.changed() => {}
            _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
        }
    }
}
