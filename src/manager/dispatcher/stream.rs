//! One node's assignments stream: the complete set, then a message per change that concerns the node
//! ([`AssignmentDiff`]), until the session ends or the node stops reading. A change of nothing the node has
//! (another node's task, its network's endpoints untouched) costs the stream a look at the touched keys.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tonic::Status;

use super::assignments::AssignmentDiff;
use super::Session;
use crate::api::dispatcher as pb;
use crate::manager::ipam::netmap::NetmapCache;
use crate::secrets::DataKey;
use crate::store::Store;

/// The assignments streams open now (every node's), for [`pace`].
static STREAMS: AtomicUsize = AtomicUsize::new(0);

/// Counts one open stream while it lives.
struct Open;

impl Open {
    fn new() -> Open {
        STREAMS.fetch_add(1, Ordering::Relaxed);
        Open
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        STREAMS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The shortest pause between two looks of a stream: a burst of changes is coalesced into one message.
pub const MIN_PAUSE: Duration = Duration::from_millis(10);
/// The longest pause after a message.
pub const MAX_PAUSE: Duration = Duration::from_secs(1);
/// What all streams together send per second at most when their messages are large: a change that every
/// node must hear of (an endpoint of a network all nodes share) is sent to a thousand nodes, and in a start
/// wave of thousands of tasks the next changes gather into the next message instead of queueing on the wire.
pub const SEND_RATE: usize = 256 << 20;

/// How long a stream waits after sending `bytes` while `streams` streams are open: its share of
/// [`SEND_RATE`], between [`MIN_PAUSE`] and [`MAX_PAUSE`] (small messages: the minimum).
pub fn pace(bytes: usize, streams: usize) -> Duration {
    let share = bytes as f64 * streams.max(1) as f64 / SEND_RATE as f64;
    Duration::from_secs_f64(share).clamp(MIN_PAUSE, MAX_PAUSE)
}

/// What a stream works from.
pub(super) struct Stream {
    pub store: Store,
    pub key: DataKey,
    pub sessions: Arc<Mutex<HashMap<String, Session>>>,
    pub netmaps: Arc<Mutex<NetmapCache>>,
    pub session_id: String,
    pub node_id: String,
}

/// Sends node `node_id`'s messages on `tx` until the session is gone or the receiver dropped.
pub(super) async fn run(
    s: Stream,
    tx: tokio::sync::mpsc::Sender<Result<pb::AssignmentsMessage, Status>>,
) {
    let Stream {
        store,
        key,
        sessions,
        netmaps,
        session_id,
        node_id,
    } = s;
    let _open = Open::new();
    let mut diff = AssignmentDiff::default();
    let mut changes = store.subscribe();
    // the store version this stream's last message (or skip) was made at
    let mut looked: Option<u64> = None;
    loop {
        // a change from here on wakes the wait below
        changes.mark_seen();
        let msg = crate::util::cpu_bound(|| {
            store.view(|s| {
                // the shared network-map parts, in step with this view of the state first
                let mut cache = netmaps.lock().unwrap_or_else(PoisonError::into_inner);
                let (version, touched) = match cache.seen() {
                    Some(seen) => store.touched_since(seen),
                    None => (store.version(), None),
                };
                cache.sync(s, version, touched.as_ref());
                // a change none of this node's costs this stream a look at the touched keys only
                let skip = looked.is_some_and(|at| {
                    diff.may_skip(&cache)
                        && !store.touched_any_since(at, |t| concerns_node(t, &node_id))
                });
                looked = Some(version);
                if skip {
                    return None;
                }
                diff.next_with(s, &node_id, &key, Some(&mut cache))
            })
        });
        let mut pause = MIN_PAUSE;
        if let Some(msg) = msg {
            pause = pace(
                prost::Message::encoded_len(&msg),
                STREAMS.load(Ordering::Relaxed),
            );
            if tx.send(Ok(msg)).await.is_err() {
                return;
            }
        }
        // wait for the next change (or a resync tick), then coalesce a burst of changes
        let alive = || {
            sessions
                .lock()
                .map(|s| s.contains_key(&session_id))
                .unwrap_or(false)
        };
        tokio::select! {
            _ = changes.changed() => {}
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
        tokio::time::sleep(pause).await;
        if !alive() || tx.is_closed() {
            return;
        }
    }
}

/// Whether a change that touched `t` may change what node `node_id` is sent, the endpoints of its networks
/// aside (the network-map cache tells those): one of its tasks, or an object its assignments or map name
/// (services, secrets, configs, networks, nodes: few, rarely changed).
fn concerns_node(t: &crate::store::Touched, node_id: &str) -> bool {
    use crate::store::ObjectKind;
    t.task_nodes.contains(node_id)
        || [
            ObjectKind::Node,
            ObjectKind::Service,
            ObjectKind::Secret,
            ObjectKind::Config,
            ObjectKind::Network,
        ]
        .into_iter()
        .any(|k| t.of(k).next().is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_messages_wait_the_minimum_large_ones_for_every_stream_their_share() {
        assert_eq!(
            pace(2_000, 1_000),
            MIN_PAUSE,
            "a task's change to a thousand nodes"
        );
        assert_eq!(pace(0, 0), MIN_PAUSE);
        // 128 KiB to each of 1,000 nodes: half a second of the rate
        let p = pace(128 << 10, 1_000);
        assert!(
            p > Duration::from_millis(400) && p < Duration::from_millis(600),
            "{p:?}"
        );
        assert_eq!(pace(64 << 20, 1_000), MAX_PAUSE);
    }
}
