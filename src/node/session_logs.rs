//! The agent's half of `service logs`: it keeps a `LogSubscriptions` stream open on its session; each request
//! (a task of this node, tail, follow) is served on its own task, reading the executor's logs and sending them
//! back in chunks with `PublishLogs` until the lines end (or, following, the task ends) or the manager's
//! reader goes away.
//!
//! Must not: serve a task this node does not run (the executor only knows its own), or block the session.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use crate::agent::Worker;
use crate::api::dispatcher::{self as pb, dispatcher_client::DispatcherClient};
use crate::exec::{LogOptions, LogStream};

type Client = DispatcherClient<tonic::transport::Channel>;

/// Lines per chunk at most.
const CHUNK_LINES: usize = 256;

/// Serves log requests until the subscription stream ends (the session is over).
pub(super) async fn serve_logs(
    mut client: Client,
    session_id: String,
    worker: Arc<Worker>,
) -> Result<(), String> {
    let mut subs = client
        .log_subscriptions(pb::LogSubscriptionsRequest {
            session_id: session_id.clone(),
        })
        .await
        .map_err(|e| format!("log subscriptions refused: {}", e.message()))?
        .into_inner();
    loop {
        let sub = subs
            .message()
            .await
            .map_err(|e| format!("log subscriptions: {}", e.message()))?
            .ok_or("log subscriptions closed")?;
        tokio::spawn(serve_one(
            client.clone(),
            session_id.clone(),
            worker.clone(),
            sub,
        ));
    }
}

/// One request: the task's lines, in chunks, then a closing chunk (with the error, if any).
async fn serve_one(
    mut client: Client,
    session_id: String,
    worker: Arc<Worker>,
    sub: pb::LogSubscription,
) {
    let opts = LogOptions {
        tail: sub.has_tail.then_some(sub.tail as usize),
        follow: sub.follow,
    };
    let chunk = {
        let session_id = session_id.clone();
        let request_id = sub.request_id.clone();
        move |lines: Vec<pb::LogChunkLine>, close: bool, error: String| pb::LogChunk {
            session_id: session_id.clone(),
            request_id: request_id.clone(),
            lines,
            close,
            error,
        }
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::LogChunk>(8);
    let send = tokio::spawn(async move {
        let _ = client
            .publish_logs(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await;
    });
    match worker.logs(&sub.task_id, opts).await {
        Err(e) => {
            let _ = tx.send(chunk(Vec::new(), true, e.to_string())).await;
        }
        Ok(lines) => {
            // batch what is ready now; a chunk leaves at CHUNK_LINES lines or after a short pause
            let mut lines = lines.ready_chunks(CHUNK_LINES);
            let mut failed = None;
            while let Some(batch) = lines.next().await {
                let mut out = Vec::with_capacity(batch.len());
                for l in batch {
                    match l {
                        Ok(l) => out.push(pb::LogChunkLine {
                            stream: match l.stream {
                                LogStream::Stdout => "stdout".into(),
                                LogStream::Stderr => "stderr".into(),
                            },
                            line: l.line,
                        }),
                        Err(e) => failed = Some(e.to_string()),
                    }
                }
                if tx.send(chunk(out, false, String::new())).await.is_err() || failed.is_some() {
                    break;
                }
                if tx.is_closed() {
                    break;
                }
            }
            let _ = tx
                .send(chunk(Vec::new(), true, failed.unwrap_or_default()))
                .await;
        }
    }
    drop(tx);
    let _ = tokio::time::timeout(Duration::from_secs(10), send).await;
}
