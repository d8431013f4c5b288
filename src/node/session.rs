//! The agent's side of the dispatcher protocol: open a session (over mutual TLS), heartbeat, receive the complete
//! assignments for this node and hand them to the `Worker`, and send status reports back in small batches.
//! Reconnects with backoff when the session breaks; the worker keeps running its tasks meanwhile (invariant 5).
//!
//! Must not: decide what runs (the dispatcher's assignments do) or talk to the store.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::agent::{StatusReport, Worker};
use crate::api::dispatcher::{self as pb, dispatcher_client::DispatcherClient};
use crate::api::to_json;
use crate::manager::dispatcher::decode_assignments;

/// What the agent needs to reach its dispatcher.
pub struct SessionConfig {
    /// The dispatcher's `host:port`.
    pub addr: String,
    /// This node's TLS client configuration (its certificate, trusting the cluster CA).
    pub tls: Arc<rustls::ClientConfig>,
    /// This node's description.
    pub description: pb::NodeDescription,
}

/// Runs the agent's session loop until the process ends.
pub async fn run(
    config: SessionConfig,
    worker: Arc<Worker>,
    mut reports: mpsc::UnboundedReceiver<StatusReport>,
) {
    let mut backoff = Duration::from_millis(100);
    // reports produced while disconnected are kept (latest per task) and sent after reconnecting
    let mut pending: HashMap<String, StatusReport> = HashMap::new();
    loop {
        match session_once(&config, &worker, &mut reports, &mut pending).await {
            Ok(()) => backoff = Duration::from_millis(100),
            Err(e) => {
                tracing::warn!("dispatcher session ended: {e}; reconnecting in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

async fn session_once(
    config: &SessionConfig,
    worker: &Arc<Worker>,
    reports: &mut mpsc::UnboundedReceiver<StatusReport>,
    pending: &mut HashMap<String, StatusReport>,
) -> Result<(), String> {
    let channel = crate::transport::tls_channel(&config.addr, config.tls.clone()).await?;
    let mut client = DispatcherClient::new(channel).max_decoding_message_size(64 << 20);
    let mut session = client
        .session(pb::SessionRequest {
            description: Some(config.description.clone()),
        })
        .await
        .map_err(|e| format!("session refused: {}", e.message()))?
        .into_inner();
    let first = session
        .message()
        .await
        .map_err(|e| e.message().to_string())?
        .ok_or("the dispatcher closed the session")?;
    let session_id = first.session_id.clone();
    let node_id = first.node_id.clone();
    let period = Duration::from_millis(first.heartbeat_period_ms.max(100));
    tracing::info!(%node_id, "agent session established");

    let mut assignments = client
        .assignments(pb::AssignmentsRequest {
            session_id: session_id.clone(),
        })
        .await
        .map_err(|e| e.message().to_string())?
        .into_inner();
    let mut heartbeat = tokio::time::interval(period);
    // retries what failed temporarily (a start that hit an I/O error, a removal that did not finish)
    let mut resync = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = resync.tick() => {
                if let Err(e) = worker.resync().await {
                    tracing::debug!("resync: {e}");
                }
            }
            msg = assignments.message() => {
                let msg = msg.map_err(|e| e.message().to_string())?.ok_or("assignments stream closed")?;
                let a = decode_assignments(&node_id, msg)?;
                if let Err(e) = worker.assign(a).await {
                    tracing::warn!("cannot converge to the assignments yet: {e}");
                }
            }
            _ = heartbeat.tick() => {
                client
                    .heartbeat(pb::HeartbeatRequest { session_id: session_id.clone() })
                    .await
                    .map_err(|e| format!("heartbeat failed: {}", e.message()))?;
            }
            report = reports.recv() => {
                let Some(report) = report else { return Ok(()) };
                pending.insert(report.task_id.clone(), report);
                // gather what arrives in the next few milliseconds into one request
                let deadline = tokio::time::sleep(Duration::from_millis(20));
                tokio::pin!(deadline);
                loop {
                    tokio::select! {
                        _ = &mut deadline => break,
                        more = reports.recv() => match more {
                            Some(r) => { pending.insert(r.task_id.clone(), r); }
                            None => break,
                        },
                    }
                }
                let updates: Vec<pb::TaskStatusUpdate> = pending
                    .values()
                    .map(|r| pb::TaskStatusUpdate { task_id: r.task_id.clone(), status_json: to_json(&r.status) })
                    .collect();
                client
                    .update_task_status(pb::UpdateTaskStatusRequest { session_id: session_id.clone(), updates })
                    .await
                    .map_err(|e| format!("status update failed: {}", e.message()))?;
                pending.clear();
            }
        }
    }
}
