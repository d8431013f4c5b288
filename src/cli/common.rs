//! What the cluster-talking commands share: a runtime, the connection, JSON decoding of objects, error printing,
//! and docker-style rendering of tasks and services.
//!
//! Must not: talk to anything but the control API.

use std::collections::HashMap;

use serde::de::DeserializeOwned;

use super::client::{connect, resolve_host, status_message};
use super::output::human_duration;
use crate::api::control::control_client::ControlClient;
use crate::model::{Node, Service, ServiceMode, Task, TaskState};

/// A connected client.
pub type Client = ControlClient<crate::cli::client::Conn>;

/// A command's failure: the message printed after `error: ` (exit status 1).
pub type CmdResult = Result<(), String>;

/// Ok when nothing failed, else every failure on its own line (commands on several objects go on after a failure,
/// like docker's, and fail at the end).
pub fn all_ok(failed: Vec<String>) -> CmdResult {
    if failed.is_empty() {
        Ok(())
    } else {
        Err(failed.join("\n"))
    }
}

/// Runs an async command on a fresh runtime; prints its error and returns the exit status.
pub fn block_on(fut: impl std::future::Future<Output = CmdResult>) -> i32 {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start: {e}");
            return 1;
        }
    };
    match rt.block_on(fut) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

/// Connects to the control API named by `--host`/`SWARM_HOST` (or the default socket).
pub async fn client(host: &Option<String>) -> Result<Client, String> {
    connect(&resolve_host(host.as_deref())).await
}

/// Maps a gRPC status to the user's message.
pub fn rpc(status: tonic::Status) -> String {
    status_message(&status)
}

/// Decodes a list of JSON objects.
pub fn decode_all<T: DeserializeOwned>(items: Vec<String>) -> Result<Vec<T>, String> {
    items
        .iter()
        .map(|j| serde_json::from_str(j).map_err(|e| format!("malformed reply: {e}")))
        .collect()
}

/// Decodes one JSON object.
pub fn decode<T: DeserializeOwned>(json: &str) -> Result<T, String> {
    serde_json::from_str(json).map_err(|e| format!("malformed reply: {e}"))
}

/// Whether a task counts as running for its service's "running/desired" figure.
pub fn is_running(t: &Task) -> bool {
    t.status.state == TaskState::Running && t.desired_state <= TaskState::Running
}

/// Docker's REPLICAS column: `2/3`, `6/6 (max 2 per node)`, or for jobs `1/4 (3/4 completed)` (jobs never show
/// the per-node limit, like docker). The update state is not part of it (`service inspect` and `stack status`
/// show it): scripts parse this column as docker prints it.
pub fn replicas(svc: &Service, tasks: &[Task], nodes: &[Node]) -> String {
    let mine: Vec<&Task> = tasks.iter().filter(|t| t.service_id == svc.id).collect();
    let running = mine.iter().filter(|t| is_running(t)).count();
    let max = svc.spec.task.placement.max_replicas_per_node;
    let per_node = |s: String| {
        if max > 0 {
            format!("{s} (max {max} per node)")
        } else {
            s
        }
    };
    match &svc.spec.mode {
        ServiceMode::Replicated { replicas } => per_node(format!("{running}/{replicas}")),
        ServiceMode::Global => {
            let desired = mine
                .iter()
                .filter(|t| t.desired_state <= TaskState::Running)
                .count();
            let _ = nodes;
            per_node(format!("{running}/{desired}"))
        }
        ServiceMode::ReplicatedJob {
            max_concurrent,
            total_completions,
        } => {
            let done = mine
                .iter()
                .filter(|t| t.status.state == TaskState::Complete)
                .count();
            format!("{running}/{max_concurrent} ({done}/{total_completions} completed)")
        }
        ServiceMode::GlobalJob => {
            let done = mine
                .iter()
                .filter(|t| t.status.state == TaskState::Complete)
                .count();
            let desired = mine
                .iter()
                .filter(|t| t.desired_state <= TaskState::Complete)
                .count();
            format!("{running}/{desired} ({done}/{desired} completed)")
        }
    }
}

/// Docker's MODE column.
pub fn mode(svc: &Service) -> &'static str {
    svc.spec.mode.name()
}

/// Docker's PORTS column: `*:8080->80/tcp`.
pub fn ports(svc: &Service) -> String {
    svc.spec
        .endpoint
        .ports
        .iter()
        .map(|p| {
            let proto = format!("{:?}", p.protocol).to_lowercase();
            match p.published_port {
                Some(pub_) => format!("*:{pub_}->{}/{proto}", p.target_port),
                None => format!("*:->{}/{proto}", p.target_port),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Docker's state names with a capital first letter ("Running", "Shutdown").
pub fn state_title(s: TaskState) -> String {
    let name = s.name();
    let mut c = name.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

/// Docker's CURRENT STATE: "Running 5 seconds ago".
pub fn current_state(t: &Task, now_ms: u64) -> String {
    let ago = now_ms.saturating_sub(t.status.timestamp);
    format!(
        "{} {} ago",
        state_title(t.status.state),
        human_duration(ago)
    )
}

/// The ERROR column.
pub fn task_error(t: &Task) -> String {
    match &t.status.err {
        Some(e) => e.clone(),
        // a task the scheduler cannot place says why, as docker does ("no suitable node (...)")
        None if t.status.state == TaskState::Pending => t.status.message.clone(),
        None => String::new(),
    }
}

/// Now, in unix milliseconds (for "… ago").
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Rows of `service ps` / `stack ps`: newest first within each slot, older tasks shown as `\_ name`.
pub fn ps_rows(
    tasks: &[Task],
    services: &HashMap<String, Service>,
    nodes: &HashMap<String, Node>,
) -> Vec<(Task, Vec<String>)> {
    let mut sorted: Vec<&Task> = tasks.iter().collect();
    sorted.sort_by(|a, b| {
        let an = services
            .get(&a.service_id)
            .map(|s| s.spec.name.as_str())
            .unwrap_or("");
        let bn = services
            .get(&b.service_id)
            .map(|s| s.spec.name.as_str())
            .unwrap_or("");
        (
            an,
            a.slot,
            a.node_id.clone(),
            std::cmp::Reverse(a.meta.created_at),
            &a.id,
        )
            .cmp(&(
                bn,
                b.slot,
                b.node_id.clone(),
                std::cmp::Reverse(b.meta.created_at),
                &b.id,
            ))
    });
    let now = now_ms();
    let mut out = Vec::new();
    let mut last_key: Option<(String, u64, Option<String>)> = None;
    for t in sorted {
        let svc_name = services
            .get(&t.service_id)
            .map(|s| s.spec.name.clone())
            .unwrap_or_else(|| t.service_id.clone());
        let key = (
            t.service_id.clone(),
            t.slot,
            if t.slot == 0 { t.node_id.clone() } else { None },
        );
        let base = if t.slot == 0 {
            format!("{svc_name}.{}", t.node_id.as_deref().unwrap_or(""))
        } else {
            format!("{svc_name}.{}", t.slot)
        };
        let name = if last_key.as_ref() == Some(&key) {
            format!(" \\_ {base}")
        } else {
            base
        };
        last_key = Some(key);
        let node = t
            .node_id
            .as_ref()
            .map(|id| {
                nodes
                    .get(id)
                    .map(|n| n.description.hostname.clone())
                    .unwrap_or_else(|| id.clone())
            })
            .unwrap_or_default();
        out.push((
            t.clone(),
            vec![
                super::output::short_id(&t.id).to_string(),
                name,
                t.spec.container.image.clone(),
                node,
                state_title(t.desired_state),
                current_state(t, now),
                task_error(t),
            ],
        ));
    }
    out
}

/// One `service ps` row as docker's JSON.
pub fn ps_json(row: &[String], t: &Task) -> serde_json::Value {
    serde_json::json!({
        "ID": t.id,
        "Name": row[1].trim_start_matches(" \\_ "),
        "Image": row[2],
        "Node": row[3],
        "DesiredState": row[4],
        "CurrentState": row[5],
        "Error": row[6],
        "Ports": "",
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manager::testutil::{service, task};
    use crate::model::{UpdateState, UpdateStatus};

    fn tasks(service: &str, n: u64, state: TaskState, desired: TaskState) -> Vec<Task> {
        (1..=n)
            .map(|i| {
                task(
                    &format!("{service}{i}"),
                    service,
                    i,
                    Some("n"),
                    desired,
                    state,
                )
            })
            .collect()
    }

    #[test]
    fn replicas_are_printed_as_docker_prints_them_without_the_update_state() {
        let mut web = service("web", ServiceMode::Replicated { replicas: 6 });
        let running = tasks("web", 6, TaskState::Running, TaskState::Running);
        assert_eq!(replicas(&web, &running, &[]), "6/6");
        // the update state stays out of the column (service inspect / stack status show it)
        web.update_status = Some(UpdateStatus {
            state: UpdateState::RollbackCompleted,
            started_at: 1,
            completed_at: Some(2),
            message: "rolled back".into(),
        });
        assert_eq!(replicas(&web, &running, &[]), "6/6");
        web.spec.task.placement.max_replicas_per_node = 2;
        assert_eq!(replicas(&web, &running, &[]), "6/6 (max 2 per node)");

        let mut job = service(
            "job",
            ServiceMode::ReplicatedJob {
                max_concurrent: 1,
                total_completions: 1,
            },
        );
        // jobs never show the per-node limit
        job.spec.task.placement.max_replicas_per_node = 2;
        let done = tasks("job", 1, TaskState::Complete, TaskState::Complete);
        assert_eq!(replicas(&job, &done, &[]), "0/1 (1/1 completed)");
    }
}
