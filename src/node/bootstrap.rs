//! A manager's store at start: the Raft node opened over the state directory (the founding manager initializes
//! a one-voter cluster on its first start; a manager that joined waits for the leader's log), and the cluster
//! object the founder creates once it leads, with `swarm init`'s message.
//!
//! Must not: wait for a leader on any start but the founder's first (a restarted manager serves reads without
//! one).

use std::sync::Arc;
use std::time::Duration;

use super::{identity, raft_dir, raft_transport, NodeConfig, NodeError};
use crate::manager::controlapi::{open_tokens, seal_tokens};
use crate::manager::proposer::Proposer;
use crate::pki::{JoinTokens, NodeRole};
use crate::secrets::DataKey;
use crate::store::raft::RaftNode;
use crate::store::{Op, Store, StoreStateMachine};
use crate::util::SystemClock;

/// Opens the Raft-backed store over the state directory. The founding manager (Raft id 1) makes itself the
/// single voter of a new cluster on its first start; a manager that joined receives the log from the leader.
pub(super) async fn open_store(
    config: &NodeConfig,
    id: &identity::Identity,
    transport: Arc<raft_transport::GrpcRaftTransport>,
) -> Result<(Store, Arc<RaftNode>, Proposer), NodeError> {
    let store = Store::default();
    let machine = StoreStateMachine::new(store.clone());
    let raft = Arc::new(
        RaftNode::open_with_transport(
            &raft_dir(config),
            id.raft_id,
            config.listen_addr.to_string(),
            Box::new(machine),
            config.raft.clone(),
            transport,
        )
        .await?,
    );
    if id.raft_id == 1 {
        raft.initialize_single().await?;
    }
    let proposer = Proposer::new(raft.clone(), Arc::new(SystemClock));
    Ok((store, raft, proposer))
}

/// `--force-new-cluster`: this manager's Raft state rewritten so that it restarts as the only voter, with every
/// entry it holds (the others must join again, with empty state directories).
pub(super) async fn force_new_cluster(
    config: &NodeConfig,
    id: &identity::Identity,
) -> Result<(), NodeError> {
    let forced = RaftNode::force_new_cluster(
        &raft_dir(config),
        id.raft_id,
        &config.listen_addr.to_string(),
    )
    .await?;
    if forced.changed {
        tracing::warn!(
            dropped = ?forced.previous_voters,
            index = forced.index,
            "--force-new-cluster: this manager is now the only member of the cluster; join the other managers \
             again with a manager token and empty state directories"
        );
        println!(
            "Forced a new cluster: this manager is its only member, with all its state (up to log entry {}). Join \
             other managers again with `swarmctl swarm join-token manager` on empty state directories.",
            forced.index
        );
    } else {
        tracing::info!(
            "--force-new-cluster: this manager already is the only member of its cluster"
        );
    }
    Ok(())
}

/// The cluster object: created by the founding manager on its first start (waiting for its own election, then
/// printing `swarm init`'s message), given join tokens if an older version made it without; a manager that
/// joined or restarted waits for nothing here.
pub(super) async fn bootstrap(
    config: &NodeConfig,
    id: &identity::Identity,
    key: &DataKey,
    store: &Store,
    raft: &RaftNode,
    proposer: &Proposer,
) {
    if id.raft_id != 1 {
        return;
    }
    if id.new_cluster || store.view(|s| s.cluster().is_none()) {
        if let Err(e) = raft.wait_for_leader(Duration::from_secs(30)).await {
            tracing::warn!("no raft leader yet: {e}");
        }
    }
    if !raft.is_leader() {
        return;
    }
    let tokens = || seal_tokens(key, &JoinTokens::generate(id.ca.digest(), &mut rand::rng()));
    match store.view(|s| s.cluster().cloned()) {
        None => {
            let cluster = crate::model::Cluster {
                id: id.cluster_id.clone(),
                meta: Default::default(),
                settings: crate::model::ClusterSettings {
                    snapshot_interval: config.raft.snapshot_interval_entries,
                    heartbeat_period_ms: config.heartbeat_period.as_millis() as u64,
                    default_addr_pool: config.default_addr_pool.clone(),
                    default_addr_pool_mask_len: config.default_addr_pool_mask_len,
                    ..Default::default()
                },
                join_tokens: tokens(),
                removed_nodes: Vec::new(),
                ca_rotation: None,
                unlock_key: Default::default(),
            };
            // the routing mesh's network exists from the start, like Swarm's `ingress`
            let ingress = crate::model::Network {
                id: crate::util::IdSource::next_id(&mut crate::util::RandomIds),
                meta: Default::default(),
                spec: crate::manager::ipam::ingress_spec(),
                allocation: None,
            };
            let ops = vec![Op::CreateCluster(cluster), Op::CreateNetwork(ingress)];
            if let Err(e) = proposer.propose(ops).await {
                tracing::warn!("cannot create the cluster object: {e}");
            }
        }
        // a cluster created before join tokens were stored gets them now
        Some(cluster) if cluster.join_tokens.0.is_empty() => {
            let updated = crate::model::Cluster {
                join_tokens: tokens(),
                ..cluster.clone()
            };
            let op = Op::UpdateCluster {
                cluster: updated,
                expected_version: cluster.meta.version,
            };
            if let Err(e) = proposer.propose(vec![op]).await {
                tracing::warn!("cannot add join tokens to the cluster object: {e}");
            }
        }
        Some(_) => {}
    }
    if id.new_cluster {
        print_init_message(store, key, &id.node_id, &config.listen_addr.to_string());
    }
}

/// What `docker swarm init` prints, on standard output (never in the log, which must not hold a token): this
/// node's id and the command that adds a worker.
fn print_init_message(store: &Store, key: &DataKey, node_id: &str, join_addr: &str) {
    let Some(Ok(tokens)) = store.view(|s| s.cluster().map(|c| open_tokens(key, c))) else {
        return;
    };
    println!(
        "Swarm initialized: current node ({node_id}) is now a manager.\n\nTo add a worker to this swarm, run the \
         following command:\n\n    swarmd --join-addr {join_addr} --join-token {}\n\nTo add a manager to this swarm, \
         run 'swarmctl swarm join-token manager' and follow the instructions.\n",
        tokens.token(NodeRole::Worker)
    );
}
