//! `service logs`: the output of a service's placed tasks, read through [`TaskLogs`] (the node's executor) and
//! merged into one stream.
//!
//! Must not: change anything.

use std::pin::Pin;

use futures::future::BoxFuture;
use futures::{Stream, StreamExt};

use super::error::ApiError;
use super::objects::resolve_service;
use super::ControlApi;
use crate::api::control;
use crate::model;

/// One line of a task's output, for `service logs`.
#[derive(Clone, Debug)]
pub struct TaskLogLine {
    /// "stdout" or "stderr".
    pub stream: String,
    /// The text, without newline.
    pub line: String,
}

/// A stream of log lines.
pub type TaskLogStream = Pin<Box<dyn Stream<Item = TaskLogLine> + Send>>;

/// Where task logs are read from (the node's executor; for now the local node only).
pub trait TaskLogs: Send + Sync + 'static {
    /// The lines of `task_id`; `tail` = last N lines only; `follow` = keep streaming until the task ends.
    fn logs(
        &self,
        task_id: String,
        tail: Option<usize>,
        follow: bool,
    ) -> BoxFuture<'static, Result<TaskLogStream, String>>;
}

/// The merged lines of every task of the service, each named by its task; tasks without logs are skipped.
pub async fn service_logs(
    api: &ControlApi,
    req: control::LogsRequest,
) -> Result<impl Stream<Item = control::LogLine> + Send, ApiError> {
    let (svc, mut tasks) = api.store.view(|s| {
        let svc = resolve_service(s, &req.service).cloned()?;
        let tasks: Vec<model::Task> = s
            .tasks_of_service(&svc.id)
            .filter(|t| t.node_id.is_some())
            .cloned()
            .collect();
        Ok::<_, ApiError>((svc, tasks))
    })?;
    tasks.sort_by_key(|t| (t.slot, t.meta.created_at));
    let tail = (req.tail > 0).then_some(req.tail as usize);
    let mut streams = Vec::new();
    for t in tasks {
        let name = t.name(&svc.spec.name);
        let follow = req.follow && !t.status.state.is_terminal();
        match api.logs.logs(t.id.clone(), tail, follow).await {
            Ok(stream) => {
                streams.push(stream.map(move |l| control::LogLine {
                    task_name: name.clone(),
                    stream: l.stream,
                    line: l.line,
                }));
            }
            Err(e) => tracing::debug!(task = %t.id, "no logs: {e}"),
        }
    }
    Ok(futures::stream::select_all(streams))
}
