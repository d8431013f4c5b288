//! # network — the node's data plane in the kernel
//!
//! What the managers' [`NetworkMap`] asks of this node, held in the kernel (root only): per network a Linux
//! bridge holding the gateway address (`swbr-<8 hex>`), for an overlay a VXLAN device (`swvx-<8 hex>`: the
//! map's VNI, this node's underlay address as local, UDP 4789, no learning) enslaved to it with a forwarding
//! table kept from the map (an all-zero entry per peer for flooding, and each remote task's MAC — derived from
//! its address, Docker's `02:42:<ip>` — to its node), outbound NAT for non-internal subnets (`nat`), and per
//! task a veth pair into the task's namespace (`task`). [`converge`] takes what exists to what the map says
//! (`desired` and `diff` are pure; `netlink` does the I/O) and removes the links of networks no longer in the
//! map; everything it makes has a name of ours (`names`), so it never touches a foreign link.
//!
//! Must not: depend on anything but `model` and `util`; touch links, tables or routes that are not its own on
//! the node (inside a task's namespace it owns everything); tear anything down when swarmd stops (tasks
//! outlive the daemon).

mod desired;
mod diff;
pub mod names;
mod nat;
mod netlink;
mod task;
pub mod tool;

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::model::netmap::NetworkMap;

pub use desired::{
    attachments, desired, parse_cidr, resolv_conf, Attachment, Desired, Fdb, NetPlan,
};
pub use diff::{diff, overlay_mtu, Link, LinkKind, Observed, Op, VXLAN_OVERHEAD};
pub use nat::ruleset as nat_ruleset;
pub use netlink::Netlink;
pub use task::{plumb, unplumb};

/// How often the converge loop repairs what someone else changed, without a new map.
const RESYNC: Duration = Duration::from_secs(30);
/// How soon a failed converge is tried again.
const RETRY: Duration = Duration::from_secs(1);

/// A network-layer failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetError {
    /// The map asks for something unusable.
    #[error("network map: {0}")]
    Map(String),
    /// The kernel refused, or a tool failed.
    #[error("{0}")]
    Kernel(String),
}

/// What the node's task runtimes need of the network layer: the current map and this node's underlay
/// address. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Plane {
    map: watch::Receiver<NetworkMap>,
    underlay: Option<Ipv4Addr>,
    enabled: bool,
    /// Held by a converge and by a task's plumbing: a converge of an older map never removes a bridge a task
    /// start has just ensured for a newer one (the converge reads the map once it holds the lock).
    busy: Arc<tokio::sync::Mutex<()>>,
    /// The namespace of each plumbed task interface, by the node's veth name: a handle kept open so the
    /// service layer can enter a task's namespace (its VIP rules) by `/proc/self/fd/N`.
    namespaces: Arc<Mutex<HashMap<String, OwnedFd>>>,
    /// Called once a task's interfaces are plumbed, before the task starts: the service layer puts the task's
    /// VIP rules in place (so its first connection to a service already goes through them).
    on_plumbed: HookSlot,
}

/// Where [`Plane::on_plumbed`] keeps its hook (shared by the plane's clones).
#[derive(Clone, Default)]
struct HookSlot(Arc<Mutex<Option<TaskHook>>>);

impl std::fmt::Debug for HookSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HookSlot")
    }
}

/// See [`Plane::on_plumbed`]: (task id, a path entering its network namespace) → done, or why not.
pub type TaskHook = Arc<dyn Fn(&str, &std::path::Path) -> Result<(), String> + Send + Sync>;

impl Plane {
    /// A plane reading `map`; `underlay` is this node's advertise address (an unspecified or IPv6 one means no
    /// VXLAN devices). Enabled only when swarmd is root.
    pub fn new(map: watch::Receiver<NetworkMap>, underlay: Option<IpAddr>) -> Self {
        Plane {
            map,
            underlay: underlay_v4(underlay),
            enabled: nix::unistd::geteuid().is_root(),
            busy: Arc::default(),
            namespaces: Arc::default(),
            on_plumbed: HookSlot::default(),
        }
    }

    /// The same plane with task networking off (`swarmd --no-task-networks`): tasks keep the host's network.
    pub fn turned_off(mut self) -> Self {
        self.enabled = false;
        self
    }

    /// Whether tasks get namespaces of their own (swarmd is root).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// This node's underlay address.
    pub fn underlay(&self) -> Option<Ipv4Addr> {
        self.underlay
    }

    /// Task `task_id`'s interfaces in the current map (none when not root, or when it has no endpoint: it keeps
    /// the runtime's default networking).
    pub fn attachments(&self, task_id: &str) -> Result<Vec<Attachment>, NetError> {
        if !self.enabled {
            return Ok(Vec::new());
        }
        attachments(&self.map.borrow(), self.underlay, task_id).map_err(NetError::Map)
    }

    /// Plumbs `attachments` into the namespace `ns` (see [`plumb`]).
    pub async fn plumb(
        &self,
        ns: BorrowedFd<'_>,
        attachments: &[Attachment],
    ) -> Result<(), NetError> {
        let busy = self.busy.lock().await;
        plumb(ns, attachments).await?;
        drop(busy);
        {
            let mut known = self.namespaces();
            for a in attachments {
                match ns.try_clone_to_owned() {
                    Ok(fd) => {
                        known.insert(a.host_veth.clone(), fd);
                    }
                    Err(e) => tracing::warn!("keeping a handle of a task's network namespace: {e}"),
                }
            }
        }
        let hook = self
            .on_plumbed
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let task = attachments.first().and_then(|a| {
            self.map
                .borrow()
                .endpoints
                .iter()
                .find(|e| names::veth_name(&e.task_id, &e.network_id) == a.host_veth)
                .map(|e| e.task_id.clone())
        });
        if let (Some(hook), Some(task)) = (hook, task) {
            if let Some(path) = self.task_netns(&task) {
                let t = task.clone();
                match tokio::task::spawn_blocking(move || hook(&t, &path)).await {
                    Ok(Err(e)) => tracing::warn!(task = %task, "before the task starts: {e}"),
                    Err(e) => tracing::warn!(task = %task, "before the task starts: {e}"),
                    Ok(Ok(())) => {}
                }
            }
        }
        Ok(())
    }

    /// Sets what runs once a task's interfaces are plumbed and before it starts (a failure is logged: the
    /// service layer tries again on its own).
    pub fn on_plumbed(&self, hook: TaskHook) {
        *self.on_plumbed.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(hook);
    }

    fn namespaces(&self) -> std::sync::MutexGuard<'_, HashMap<String, OwnedFd>> {
        self.namespaces.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A path that enters task `task_id`'s network namespace (while this process runs), once it was plumbed.
    pub fn task_netns(&self, task_id: &str) -> Option<PathBuf> {
        let networks: Vec<String> = self
            .map
            .borrow()
            .endpoints
            .iter()
            .filter(|e| e.task_id == task_id)
            .map(|e| e.network_id.clone())
            .collect();
        let known = self.namespaces();
        networks.iter().find_map(|n| {
            known
                .get(&names::veth_name(task_id, n))
                .map(|fd| PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd())))
        })
    }

    /// Lets go of the namespace handles of interfaces the current map no longer has.
    pub fn forget_gone(&self) {
        let live: BTreeSet<String> = self
            .map
            .borrow()
            .endpoints
            .iter()
            .map(|e| names::veth_name(&e.task_id, &e.network_id))
            .collect();
        self.namespaces().retain(|veth, _| live.contains(veth));
    }

    /// The converge loop over this plane's map (see [`run`]).
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), String> {
        run(self.map, self.underlay, self.busy, shutdown).await
    }
}

fn underlay_v4(addr: Option<IpAddr>) -> Option<Ipv4Addr> {
    match addr {
        Some(IpAddr::V4(a)) if !a.is_unspecified() => Some(a),
        _ => None,
    }
}

/// What one converge did.
#[derive(Debug, Default)]
pub struct Converged {
    /// The kernel operations applied.
    pub ops: Vec<Op>,
    /// Map entries left out, one sentence each.
    pub problems: Vec<String>,
}

/// One converge of this process's network namespace to `map`: links, forwarding entries, NAT (re-applied when
/// its ruleset differs from `last_nat`, which is updated), IPv4 forwarding on when a network needs NAT.
pub async fn converge(
    nl: &Netlink,
    map: &NetworkMap,
    underlay: Option<Ipv4Addr>,
    last_nat: &mut Option<String>,
) -> Result<Converged, NetError> {
    let d = desired(map, underlay);
    let observed = nl.observe().await?;
    let ops = diff(&d.networks, &observed, true);
    nl.apply(&ops).await?;
    let rules = nat::ruleset(&d.networks);
    if last_nat.as_deref() != Some(rules.as_str()) {
        let script = rules.clone();
        tokio::task::spawn_blocking(move || nat::apply(&script))
            .await
            .map_err(|e| NetError::Kernel(format!("applying the NAT ruleset: {e}")))??;
        *last_nat = Some(rules);
    }
    if !d.networks.is_empty() {
        tokio::task::spawn_blocking(nat::open_forwarding)
            .await
            .map_err(|e| NetError::Kernel(format!("opening forwarding: {e}")))??;
    }
    if d.networks.iter().any(|n| !n.internal) {
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
            .map_err(|e| NetError::Kernel(format!("turning on IPv4 forwarding: {e}")))?;
    }
    Ok(Converged {
        ops,
        problems: d.problems,
    })
}

/// Converges this process's namespace each time `map` changes (and every 30 s, to repair), holding `busy`
/// while it does (task plumbing holds it too), from the first map
/// sent on: until then nothing is touched, so a restarted swarmd never removes the networks its surviving
/// tasks use before the managers have spoken. A failed converge is logged and retried. Ends with `shutdown`
/// (leaving everything in place) or when the map's sender is gone.
pub async fn run(
    mut map: watch::Receiver<NetworkMap>,
    underlay: Option<Ipv4Addr>,
    busy: Arc<tokio::sync::Mutex<()>>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), String> {
    tokio::pin!(shutdown);
    tokio::select! {
        changed = map.changed() => if changed.is_err() { return Ok(()) },
        () = &mut shutdown => return Ok(()),
    }
    let nl = Netlink::here().map_err(|e| e.to_string())?;
    let mut last_nat = None;
    let mut last_problems = Vec::new();
    loop {
        let guard = busy.lock().await;
        let current = map.borrow_and_update().clone();
        let result = converge(&nl, &current, underlay, &mut last_nat).await;
        drop(guard);
        let wait = match result {
            Ok(done) => {
                if done.problems != last_problems {
                    for p in &done.problems {
                        tracing::warn!("network map: {p}");
                    }
                    last_problems = done.problems;
                }
                if !done.ops.is_empty() {
                    tracing::info!(
                        changes = done.ops.len(),
                        networks = current.networks.len(),
                        "network plane converged"
                    );
                    tracing::debug!(ops = ?done.ops, "network plane changes");
                }
                RESYNC
            }
            Err(e) => {
                tracing::warn!("network plane: {e} (retrying)");
                last_nat = None;
                RETRY
            }
        };
        tokio::select! {
            changed = map.changed() => if changed.is_err() { return Ok(()) },
            () = tokio::time::sleep(wait) => {}
            () = &mut shutdown => return Ok(()),
        }
    }
}
