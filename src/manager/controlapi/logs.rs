//! `service logs`: the output of a service's placed tasks, read through [`TaskLogs`] (this node's executor, or
//! the task's node through the dispatcher's log broker) and merged into one stream. A node that cannot be
//! reached gives one `error` line for its tasks; the other tasks' lines still come.
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

/// Where task logs are read from.
pub trait TaskLogs: Send + Sync + 'static {
    /// The lines of `task_id` on `node_id`; `tail` = last N lines only; `follow` = keep streaming until the task
    /// ends. A line with stream `error` reports a failure (a node that went away) in the stream itself.
    fn logs(
        &self,
        node_id: String,
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
        let node = t.node_id.clone().unwrap_or_default();
        match api.logs.logs(node, t.id.clone(), tail, follow).await {
            Ok(stream) => {
                streams.push(
                    stream
                        .map(move |l| control::LogLine {
                            task_name: name.clone(),
                            stream: l.stream,
                            line: l.line,
                        })
                        .boxed(),
                );
            }
            Err(e) => {
                let line = control::LogLine {
                    task_name: name,
                    stream: "error".into(),
                    line: format!("logs unavailable: {e}"),
                };
                streams.push(futures::stream::iter([line]).boxed());
            }
        }
    }
    Ok(futures::stream::select_all(streams))
}
