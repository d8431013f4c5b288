//! The agent's side of the dispatcher protocol: open a session (over mutual TLS), heartbeat, receive the complete
//! assignments for this node and hand them to the `Worker`, and send status reports back in small batches.
//! Reconnects with backoff when the session breaks; the worker keeps running its tasks meanwhile (invariant 5).
//!
//! Must not: decide what runs (the dispatcher's assignments do) or talk to the store.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;

pub use super::managers::ManagerList;
use crate::agent::{Assignments, StatusReport, Worker};
use crate::api::dispatcher::{self as pb, dispatcher_client::DispatcherClient};
use crate::api::to_json;
use crate::manager::dispatcher::AssignmentSet;

/// The leader a "not the leader" refusal names.
fn leader_hint(status: &tonic::Status) -> Option<String> {
    status
        .metadata()
        .get(crate::manager::raftpeer::LEADER_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// What the agent needs to reach its dispatcher.
pub struct SessionConfig {
    /// The managers to try (their cluster `host:port`); the session keeps it up to date.
    pub managers: ManagerList,
    /// This node's TLS client configuration (its certificate, trusting the cluster CA); replaced when the
    /// certificate is renewed, read at every (re)connection.
    pub tls: super::renew::ClientTls,
    /// This node's description.
    pub description: pb::NodeDescription,
    /// The cluster whose manager the dispatcher must be (its certificate is checked).
    pub cluster_id: String,
    /// Receives the role the managers give this node (`manager` / `worker`), from every heartbeat.
    pub role: Option<tokio::sync::watch::Sender<String>>,
}

/// First delay before reconnecting; doubles (with jitter) after each failed attempt, up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest delay between two reconnection attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Exponential backoff with jitter, capped, reset after a session that worked.
struct Backoff {
    next: Duration,
}

impl Backoff {
    fn new() -> Self {
        Backoff { next: BACKOFF_MIN }
    }

    fn reset(&mut self) {
        self.next = BACKOFF_MIN;
    }

    /// The delay to wait now: between half and all of the current step, which then doubles.
    fn delay(&mut self) -> Duration {
        let step = self.next;
        self.next = (step * 2).min(BACKOFF_MAX);
        let jitter = rand::random_range(0.5..=1.0);
        step.mul_f64(jitter)
    }
}

/// How a session ended: whether it was up (opened and a heartbeat acknowledged) before it broke.
struct Ended {
    worked: bool,
    /// The manager named the leader to go to.
    redirected: bool,
    error: String,
}

/// What the dispatcher says to a node removed with `node rm`.
const REMOVED: &str = "was removed from the cluster";

/// Runs the agent's session loop until the process ends. A node told it was removed from the cluster stops its
/// tasks (and keeps trying, in case an operator restores it).
pub async fn run(
    config: SessionConfig,
    worker: Arc<Worker>,
    mut reports: mpsc::UnboundedReceiver<StatusReport>,
) {
    let mut backoff = Backoff::new();
    // reports produced while disconnected are kept (latest per task) and sent after reconnecting
    let mut pending: HashMap<String, StatusReport> = HashMap::new();
    let mut stopped_for_removal = false;
    loop {
        let Some(ended) = session_once(&config, &worker, &mut reports, &mut pending).await else {
            return;
        };
        if ended.worked || ended.redirected {
            backoff.reset();
        }
        if !ended.redirected {
            config.managers.failed();
        }
        if ended.error.contains(REMOVED) && !stopped_for_removal {
            // like a node that left: nothing keeps running for a cluster that no longer knows this node
            tracing::error!("{}; stopping this node's tasks", ended.error);
            if let Err(e) = worker.assign(crate::agent::Assignments::default()).await {
                tracing::warn!("stopping the tasks of a removed node: {e}");
            }
            stopped_for_removal = true;
        }
        let delay = backoff.delay();
        tracing::warn!(
            "dispatcher session ended: {}; reconnecting in {delay:?}",
            ended.error
        );
        tokio::time::sleep(delay).await;
    }
}

/// One session; `None` when the reports channel closed (the worker is gone).
async fn session_once(
    config: &SessionConfig,
    worker: &Arc<Worker>,
    reports: &mut mpsc::UnboundedReceiver<StatusReport>,
    pending: &mut HashMap<String, StatusReport>,
) -> Option<Ended> {
    let worked = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let Some(addr) = config.managers.target() else {
        return Some(Ended {
            worked: false,
            redirected: false,
            error: "no manager address known".into(),
        });
    };
    let result = session_parts(&addr, config, worker, reports, pending, worked.clone()).await;
    let worked = worked.load(std::sync::atomic::Ordering::SeqCst);
    match result {
        Ok(true) => None,
        Ok(false) => Some(Ended {
            worked,
            redirected: false,
            error: "ended".into(),
        }),
        Err(e) => {
            let redirected = match e.leader {
                Some(leader) if leader != addr => {
                    config.managers.redirect(leader);
                    true
                }
                _ => false,
            };
            Some(Ended {
                worked,
                redirected,
                error: format!("{addr}: {}", e.message),
            })
        }
    }
}

/// Opens a session and runs its parts: heartbeats and assignments each on their own task (a slow `assign` or a
/// stuck upload never delays a heartbeat), status uploads here. Ends at the first part that fails; `Ok(true)` when
/// the reports channel closed.
async fn session_parts(
    addr: &str,
    config: &SessionConfig,
    worker: &Arc<Worker>,
    reports: &mut mpsc::UnboundedReceiver<StatusReport>,
    pending: &mut HashMap<String, StatusReport>,
    worked: Arc<std::sync::atomic::AtomicBool>,
) -> Result<bool, SessionError> {
    let channel = crate::transport::tls_channel_to_manager(
        addr,
        super::renew::current(&config.tls),
        &config.cluster_id,
    )
    .await?;
    let mut client = DispatcherClient::new(channel)
        .max_decoding_message_size(crate::model::limits::MAX_MESSAGE_BYTES);
    let mut session = client
        .session(pb::SessionRequest {
            description: Some(config.description.clone()),
        })
        .await
        .map_err(|e| SessionError {
            message: format!("session refused: {}", e.message()),
            leader: leader_hint(&e),
        })?
        .into_inner();
    let first = session
        .message()
        .await
        .map_err(|e| e.message().to_string())?
        .ok_or("the dispatcher closed the session")?;
    let session_id = first.session_id.clone();
    let node_id = first.node_id.clone();
    config.managers.learned(first.managers.clone());
    let period = Duration::from_millis(first.heartbeat_period_ms.max(100));
    tracing::info!(%node_id, "agent session established");

    let assignments = client
        .assignments(pb::AssignmentsRequest {
            session_id: session_id.clone(),
        })
        .await
        .map_err(|e| e.message().to_string())?
        .into_inner();
    // dropping the set (when this session ends) aborts its tasks
    let mut tasks: JoinSet<Result<(), SessionError>> = JoinSet::new();
    tasks.spawn(heartbeats(
        client.clone(),
        session_id.clone(),
        period,
        worked,
        config.role.clone(),
    ));
    {
        let worker = worker.clone();
        tasks.spawn(async move { Ok(apply_assignments(assignments, worker, node_id).await?) });
    }
    {
        let (client, session_id, worker) = (client.clone(), session_id.clone(), worker.clone());
        tasks.spawn(async move {
            Ok(super::session_logs::serve_logs(client, session_id, worker).await?)
        });
    }
    // the session stream stays open (unread) while the session lives
    let _session = session;
    tokio::select! {
        Some(joined) = tasks.join_next() => Err(match joined {
            Ok(Err(e)) => e,
            Ok(Ok(())) => "session task ended".into(),
            Err(e) => format!("session task failed: {e}").into(),
        }),
        closed = upload_reports(&mut client, &session_id, reports, pending) => Ok(closed.map(|()| true)?),
    }
}

/// Why a session ended, with the leader a refusal named.
struct SessionError {
    message: String,
    leader: Option<String>,
}

impl From<String> for SessionError {
    fn from(message: String) -> Self {
        SessionError {
            message,
            leader: None,
        }
    }
}

impl From<&str> for SessionError {
    fn from(message: &str) -> Self {
        message.to_string().into()
    }
}

/// Heartbeats every `period` until one fails (or takes longer than the dispatcher waits for).
async fn heartbeats(
    mut client: DispatcherClient<tonic::transport::Channel>,
    session_id: String,
    period: Duration,
    worked: Arc<std::sync::atomic::AtomicBool>,
    role: Option<tokio::sync::watch::Sender<String>>,
) -> Result<(), SessionError> {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let beat = client.heartbeat(pb::HeartbeatRequest {
            session_id: session_id.clone(),
        });
        match tokio::time::timeout(period * 3, beat).await {
            Ok(Ok(reply)) => {
                worked.store(true, std::sync::atomic::Ordering::SeqCst);
                let given = reply.into_inner().role;
                if let (Some(tx), false) = (&role, given.is_empty()) {
                    tx.send_if_modified(|r| std::mem::replace(r, given.clone()) != given);
                }
            }
            Ok(Err(e)) => {
                return Err(SessionError {
                    message: format!("heartbeat failed: {}", e.message()),
                    leader: leader_hint(&e),
                })
            }
            Err(_) => return Err("heartbeat timed out".into()),
        }
    }
}

/// Receives the assignments and hands the latest to the worker, converging again every few seconds to retry what
/// failed temporarily (a start that hit an I/O error, a removal that did not finish).
async fn apply_assignments(
    mut assignments: tonic::Streaming<pb::AssignmentsMessage>,
    worker: Arc<Worker>,
    node_id: String,
) -> Result<(), String> {
    let (latest_tx, mut latest) = mpsc::unbounded_channel::<Assignments>();
    let receive = async move {
        let mut set = AssignmentSet::default();
        loop {
            let msg = assignments
                .message()
                .await
                .map_err(|e| e.message().to_string())?
                .ok_or("assignments stream closed")?;
            let a = set.apply(&node_id, msg)?;
            let _ = latest_tx.send(a);
        }
    };
    let apply = async move {
        let mut resync = tokio::time::interval(Duration::from_secs(5));
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = resync.tick() => {
                    if let Err(e) = worker.resync().await {
                        tracing::debug!("resync: {e}");
                    }
                }
                a = latest.recv() => {
                    let Some(mut a) = a else { return };
                    // only the newest set matters (each one is complete)
                    while let Ok(newer) = latest.try_recv() {
                        a = newer;
                    }
                    if let Err(e) = worker.assign(a).await {
                        tracing::warn!("cannot converge to the assignments yet: {e}");
                    }
                    resync.reset();
                }
            }
        }
    };
    tokio::select! {
        r = receive => r,
        () = apply => Err("assignments stopped".into()),
    }
}

/// Sends status reports in small batches; returns `Ok` when the reports channel closes.
async fn upload_reports(
    client: &mut DispatcherClient<tonic::transport::Channel>,
    session_id: &str,
    reports: &mut mpsc::UnboundedReceiver<StatusReport>,
    pending: &mut HashMap<String, StatusReport>,
) -> Result<(), String> {
    loop {
        if pending.is_empty() {
            let Some(report) = reports.recv().await else {
                return Ok(());
            };
            pending.insert(report.task_id.clone(), report);
        }
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
            .map(|r| pb::TaskStatusUpdate {
                task_id: r.task_id.clone(),
                status_json: to_json(&r.status),
            })
            .collect();
        client
            .update_task_status(pb::UpdateTaskStatusRequest {
                session_id: session_id.to_string(),
                updates,
            })
            .await
            .map_err(|e| format!("status update failed: {}", e.message()))?;
        pending.clear();
    }
}
