//! The log broker: how `service logs` reaches tasks on other nodes. Each node's agent keeps a
//! `LogSubscriptions` stream open; a request for a task's logs is sent down the stream of the task's node,
//! and the node streams the lines back with `PublishLogs`, tagged with the request id. A node without an open
//! stream (down, unreachable) makes the request fail at once, never hang.
//!
//! Must not: read logs itself, or let a node publish lines for a request made to another node.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use tokio::sync::mpsc;

use crate::api::dispatcher as pb;
use crate::manager::controlapi::{TaskLogLine, TaskLogStream};
use crate::util::{IdSource, RandomIds};

/// What a request's receiver gets: lines, or the node's error (the end).
type Delivery = Result<Vec<TaskLogLine>, String>;

struct Request {
    node_id: String,
    lines: mpsc::Sender<Delivery>,
}

#[derive(Default)]
struct Inner {
    nodes: HashMap<String, mpsc::Sender<pb::LogSubscription>>,
    requests: HashMap<String, Request>,
}

/// Routes log requests to nodes and their lines back.
#[derive(Clone, Default)]
pub struct LogBroker {
    inner: Arc<Mutex<Inner>>,
}

impl LogBroker {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A node opened its subscription stream (replacing an older one): requests for it arrive here.
    pub fn subscribe(&self, node_id: &str) -> mpsc::Receiver<pb::LogSubscription> {
        let (tx, rx) = mpsc::channel(64);
        self.inner().nodes.insert(node_id.to_string(), tx);
        rx
    }

    /// Asks `node_id` for the logs of `task_id`.
    pub async fn request(
        &self,
        node_id: &str,
        task_id: &str,
        tail: Option<usize>,
        follow: bool,
    ) -> Result<TaskLogStream, String> {
        let request_id = RandomIds.next_id();
        let (tx, rx) = mpsc::channel::<Delivery>(64);
        let node = {
            let mut inner = self.inner();
            inner.nodes.retain(|_, s| !s.is_closed());
            let node = inner.nodes.get(node_id).cloned();
            if node.is_some() {
                inner.requests.insert(
                    request_id.clone(),
                    Request {
                        node_id: node_id.to_string(),
                        lines: tx,
                    },
                );
            }
            node
        };
        let Some(node) = node else {
            return Err(format!("node {node_id} is not connected"));
        };
        let sub = pb::LogSubscription {
            request_id: request_id.clone(),
            task_id: task_id.to_string(),
            tail: tail.unwrap_or(0) as u64,
            has_tail: tail.is_some(),
            follow,
        };
        if node.send(sub).await.is_err() {
            self.inner().requests.remove(&request_id);
            return Err(format!("node {node_id} is not connected"));
        }
        let node_id = node_id.to_string();
        let lines = tokio_stream::wrappers::ReceiverStream::new(rx).flat_map(move |d| {
            let items = match d {
                Ok(lines) => lines,
                Err(e) => vec![TaskLogLine {
                    stream: "error".into(),
                    line: format!("node {node_id}: {e}"),
                }],
            };
            futures::stream::iter(items)
        });
        Ok(Box::pin(lines))
    }

    /// Lines published by `node_id` for a request. Refused (false) when the request is unknown, was made to
    /// another node, or its reader went away — the node then stops sending.
    pub async fn publish(&self, node_id: &str, chunk: pb::LogChunk) -> bool {
        let sender = {
            let inner = self.inner();
            match inner.requests.get(&chunk.request_id) {
                Some(r) if r.node_id == node_id => Some(r.lines.clone()),
                _ => None,
            }
        };
        let Some(sender) = sender else {
            return false;
        };
        let lines: Vec<TaskLogLine> = chunk
            .lines
            .into_iter()
            .map(|l| TaskLogLine {
                stream: l.stream,
                line: l.line,
            })
            .collect();
        let mut ok = lines.is_empty() || sender.send(Ok(lines)).await.is_ok();
        if !chunk.error.is_empty() {
            ok = sender.send(Err(chunk.error)).await.is_ok() && ok;
        }
        if chunk.close || !ok {
            self.inner().requests.remove(&chunk.request_id);
        }
        ok && !chunk.close
    }

    /// A request's publisher went away without closing it: its reader ends.
    pub fn forget(&self, request_id: &str) {
        self.inner().requests.remove(request_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_reach_the_requester_only_from_the_asked_node() {
        let broker = LogBroker::default();
        assert_eq!(
            broker
                .request("n1", "t1", None, false)
                .await
                .err()
                .as_deref(),
            Some("node n1 is not connected")
        );
        let mut subs = broker.subscribe("n1");
        let mut lines = broker.request("n1", "t1", Some(5), false).await.unwrap();
        let sub = subs.recv().await.unwrap();
        assert_eq!(
            (sub.task_id.as_str(), sub.tail, sub.has_tail),
            ("t1", 5, true)
        );
        let chunk = |lines: &[&str], close: bool| pb::LogChunk {
            session_id: String::new(),
            request_id: sub.request_id.clone(),
            lines: lines
                .iter()
                .map(|l| pb::LogChunkLine {
                    stream: "stdout".into(),
                    line: l.to_string(),
                })
                .collect(),
            close,
            error: String::new(),
        };
        assert!(!broker.publish("n2", chunk(&["forged"], false)).await);
        assert!(broker.publish("n1", chunk(&["a", "b"], false)).await);
        assert!(!broker.publish("n1", chunk(&["c"], true)).await);
        let got: Vec<String> = lines.by_ref().map(|l| l.line).collect().await;
        assert_eq!(got, vec!["a", "b", "c"]);
    }
}
