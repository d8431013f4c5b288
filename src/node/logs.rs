//! `service logs` on a manager: this node's tasks from its own executor, other nodes' through the dispatcher's
//! log broker.

use std::sync::Arc;

use futures::StreamExt;

use crate::agent::Worker;
use crate::exec::{LogOptions, LogStream};
use crate::manager::controlapi::{TaskLogLine, TaskLogStream, TaskLogs};

/// `service logs` on a manager: tasks of this node from its own executor, tasks of other nodes through the
/// dispatcher's log broker.
pub(super) struct RoutedLogs {
    pub(super) local_node: String,
    pub(super) worker: Arc<Worker>,
    pub(super) broker: crate::manager::dispatcher::LogBroker,
}

impl TaskLogs for RoutedLogs {
    fn logs(
        &self,
        node_id: String,
        task_id: String,
        tail: Option<usize>,
        follow: bool,
    ) -> futures::future::BoxFuture<'static, Result<TaskLogStream, String>> {
        if node_id != self.local_node {
            let broker = self.broker.clone();
            return Box::pin(async move { broker.request(&node_id, &task_id, tail, follow).await });
        }
        let worker = self.worker.clone();
        Box::pin(async move {
            let lines = worker
                .logs(&task_id, LogOptions { tail, follow })
                .await
                .map_err(|e| e.to_string())?;
            let stream: TaskLogStream = Box::pin(lines.filter_map(|l| async move {
                l.ok().map(|l| TaskLogLine {
                    stream: match l.stream {
                        LogStream::Stdout => "stdout".into(),
                        LogStream::Stderr => "stderr".into(),
                    },
                    line: l.line,
                })
            }));
            Ok(stream)
        })
    }
}
