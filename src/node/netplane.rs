//! The node's network layer, wired: the `watch` channel of the managers' [`NetworkMap`] (its sender is where
//! the agent puts each map the dispatcher sends, before the assignments that use it), the
//! [`Plane`](crate::network::Plane) the executor reads task attachments from, and the converge loop as a part of
//! the node's lifecycle ([`Parts`]). Without root the loop does not run and swarmd says once that tasks share
//! the host's network.
//!
//! Until the dispatcher sends maps, `SWARMD_NETWORK_MAP_FILE` names a JSON `NetworkMap` file that is read
//! (and re-read when it changes) into the channel: what the tests use to drive a real swarmd.
//!
//! Must not: hold network logic (it is in `network`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::watch;

use crate::model::netmap::NetworkMap;
use crate::network::Plane;

use super::parts::Parts;

/// The environment variable naming a map file to feed the channel from.
pub const MAP_FILE_ENV: &str = "SWARMD_NETWORK_MAP_FILE";

/// How often the map file is looked at.
const MAP_FILE_POLL: Duration = Duration::from_millis(100);

/// The channel and the plane of one running node.
pub struct NodeNetwork {
    tx: watch::Sender<NetworkMap>,
    plane: Plane,
}

impl NodeNetwork {
    /// For a node advertising `listen_addr` (its IP is the VXLAN underlay address).
    pub fn new(listen_addr: SocketAddr) -> Self {
        let (tx, rx) = watch::channel(NetworkMap::default());
        NodeNetwork {
            tx,
            plane: Plane::new(rx, Some(listen_addr.ip())),
        }
    }

    /// Where the agent sends each map it receives.
    pub fn sender(&self) -> watch::Sender<NetworkMap> {
        self.tx.clone()
    }

    /// The sender the agent publishes the dispatcher's maps on: none when [`MAP_FILE_ENV`] feeds the channel
    /// instead (tests that drive the plane without managers).
    pub fn agent_sender(&self) -> Option<watch::Sender<NetworkMap>> {
        std::env::var_os(MAP_FILE_ENV)
            .is_none()
            .then(|| self.tx.clone())
    }

    /// What the executor reads attachments from.
    pub fn plane(&self) -> Plane {
        self.plane.clone()
    }

    /// Adds the converge loop (and the map-file feeder, when [`MAP_FILE_ENV`] is set) to `parts`; without
    /// root, says once that tasks keep the host's network.
    pub fn spawn(&self, parts: &mut Parts) {
        if !self.plane.enabled() {
            tracing::warn!(
                "service networking: swarmd is not running as root: tasks share the host's network (no address \
                 of their own, no overlay network, no outbound NAT)"
            );
            return;
        }
        if self.plane.underlay().is_none() {
            tracing::warn!(
                "service networking: --listen-addr is not a specific IPv4 address: overlay networks stay local to \
                 this node (no VXLAN underlay)"
            );
        }
        let plane = self.plane.clone();
        let keep = self.tx.clone();
        let shutdown = parts.shutdown();
        parts.spawn("the network plane", async move {
            // the sender lives as long as the loop, so the loop ends only with the shutdown
            let _keep = keep;
            plane.run(shutdown.wait()).await
        });
        if let Some(file) = std::env::var_os(MAP_FILE_ENV).map(PathBuf::from) {
            let tx = self.tx.clone();
            parts.spawn_until_shutdown("the network map file", feed_from_file(file, tx));
        }
    }
}

/// Reads `file` into `tx` whenever its content changes; a bad file is reported once per content, naming the
/// line and column.
async fn feed_from_file(file: PathBuf, tx: watch::Sender<NetworkMap>) -> Result<(), String> {
    let mut last: Option<String> = None;
    loop {
        match tokio::fs::read_to_string(&file).await {
            Ok(text) if last.as_deref() != Some(text.as_str()) => {
                match serde_json::from_str::<NetworkMap>(&text) {
                    Ok(map) => {
                        tx.send_replace(map);
                    }
                    Err(e) => tracing::warn!(
                        "{}: line {} column {}: {e}; keeping the previous network map",
                        file.display(),
                        e.line(),
                        e.column()
                    ),
                }
                last = Some(text);
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!("{}: {e}", file.display()),
        }
        tokio::time::sleep(MAP_FILE_POLL).await;
    }
}
