//! Status reports from every agent gathered into one Raft entry per short window (swarmkit: up to 10,000
//! updates or 100 ms), instead of an entry per report call: a start wave on many nodes costs a few entries.
//!
//! Each caller waits for the batch its reports went into; a batch rejected because a task moved on meanwhile
//! is recomputed from the current state (the ops carry expected versions), a few times at most.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::status_ops;
use crate::manager::proposer::{ProposeError, Proposer};
use crate::model::TaskStatus;
use crate::store::Store;

/// How long the first report of a batch waits for others.
pub const WINDOW: Duration = Duration::from_millis(50);
/// At most this many reports go into one entry.
pub const MAX_REPORTS: usize = 10_000;
/// How often a rejected batch is recomputed before its callers are told to resend.
const ATTEMPTS: usize = 5;

/// One agent call's reports, with the channel its answer goes back on.
struct Reports {
    node_id: String,
    updates: Vec<(String, TaskStatus)>,
    done: oneshot::Sender<Result<(), String>>,
}

/// The sending side: cheap to clone, one per dispatcher.
#[derive(Clone)]
pub struct StatusBatcher {
    tx: mpsc::Sender<Reports>,
}

impl StatusBatcher {
    /// Starts the batching loop on the current runtime.
    pub fn start(store: Store, proposer: Proposer) -> StatusBatcher {
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(run(store, proposer, rx));
        StatusBatcher { tx }
    }

    /// Records `updates` from `node_id`; returns once the batch holding them is applied (or why not).
    pub async fn report(
        &self,
        node_id: String,
        updates: Vec<(String, TaskStatus)>,
    ) -> Result<(), String> {
        let (done, answer) = oneshot::channel();
        self.tx
            .send(Reports {
                node_id,
                updates,
                done,
            })
            .await
            .map_err(|_| "the dispatcher is stopping".to_string())?;
        answer
            .await
            .map_err(|_| "the dispatcher is stopping".to_string())?
    }
}

async fn run(store: Store, proposer: Proposer, mut rx: mpsc::Receiver<Reports>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let mut count = batch[0].updates.len();
        let window = tokio::time::sleep(WINDOW);
        tokio::pin!(window);
        while count < MAX_REPORTS {
            tokio::select! {
                _ = &mut window => break,
                more = rx.recv() => match more {
                    Some(r) => {
                        count += r.updates.len();
                        batch.push(r);
                    }
                    None => break,
                },
            }
        }
        let result = propose(&store, &proposer, &batch).await;
        for r in batch {
            let _ = r.done.send(result.clone());
        }
    }
}

async fn propose(store: &Store, proposer: &Proposer, batch: &[Reports]) -> Result<(), String> {
    for _ in 0..ATTEMPTS {
        let ops = store.view(|s| {
            batch
                .iter()
                .flat_map(|r| status_ops(s, &r.node_id, &r.updates))
                .collect::<Vec<_>>()
        });
        if ops.is_empty() {
            return Ok(());
        }
        match proposer.propose(ops).await {
            Ok(_) => return Ok(()),
            Err(ProposeError::Rejected(r)) => {
                tracing::debug!("status batch raced another change, recomputing: {r}");
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    Err("status reports kept racing other changes: send them again".into())
}
