//! One node's assignments stream: the complete set, then a message per change that concerns the node
//! ([`AssignmentDiff`]), until the session ends or the node stops reading. A change of nothing the node has
//! (another node's task, its network's endpoints untouched) costs the stream a look at the touched keys.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tonic::Status;

use super::assignments::AssignmentDiff;
use super::Session;
use crate::api::dispatcher as pb;
use crate::manager::ipam::netmap::NetmapCache;
use crate::secrets::DataKey;
use crate::store::Store;

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
        if let Some(msg) = msg {
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
        tokio::time::sleep(Duration::from_millis(10)).await;
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
