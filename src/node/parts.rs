//! The parts of a running node as one set: each part (the Raft node, the listeners, the driver, the dispatcher's
//! heartbeat monitor, the agent session) runs on its own task; a shutdown is broadcast to all and every part is
//! waited for. A part that ends on its own (an error, a panic, or a loop that should never return) stops the whole
//! node, naming the part.
//!
//! Must not: know what the parts are.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::{Id, JoinSet};

/// How long parts get to finish after the shutdown is broadcast before they are aborted.
const GRACE: Duration = Duration::from_secs(2);

/// A part ended before the node was asked to stop.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{part} stopped: {message}")]
pub struct PartFailed {
    /// The part's name.
    pub part: &'static str,
    /// Why it stopped.
    pub message: String,
}

/// The shutdown signal, as a part receives it.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// Resolves once the node is stopping.
    pub async fn wait(mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}

/// The set of running parts.
pub struct Parts {
    set: JoinSet<Result<(), String>>,
    names: HashMap<Id, &'static str>,
    stop: watch::Sender<bool>,
}

impl Default for Parts {
    fn default() -> Self {
        Self::new()
    }
}

impl Parts {
    /// An empty set.
    pub fn new() -> Self {
        Parts {
            set: JoinSet::new(),
            names: HashMap::new(),
            stop: watch::channel(false).0,
        }
    }

    /// The shutdown signal, for parts that stop gracefully.
    pub fn shutdown(&self) -> Shutdown {
        Shutdown(self.stop.subscribe())
    }

    /// Runs `part` until it ends; it must watch [`Parts::shutdown`] to end when asked.
    pub fn spawn<F>(&mut self, name: &'static str, part: F)
    where
        F: Future<Output = Result<(), String>> + Send + 'static,
    {
        let handle = self.set.spawn(part);
        self.names.insert(handle.id(), name);
    }

    /// Runs `part` until the shutdown, then drops it; `part` ending on its own is a failure.
    pub fn spawn_until_shutdown<F>(&mut self, name: &'static str, part: F)
    where
        F: Future<Output = Result<(), String>> + Send + 'static,
    {
        let shutdown = self.shutdown();
        self.spawn(name, async move {
            tokio::select! {
                r = part => r.and(Err("ended unexpectedly".into())),
                _ = shutdown.wait() => Ok(()),
            }
        });
    }

    /// Runs until `signal` resolves or a part ends, then broadcasts the shutdown and waits for every part (aborting
    /// those still running after a grace period). Returns the part that failed, if one did.
    pub async fn run(mut self, signal: impl Future<Output = ()>) -> Result<(), PartFailed> {
        let failed = tokio::select! {
            _ = signal => {
                tracing::info!("shutting down (tasks keep running)");
                None
            }
            Some(joined) = self.set.join_next_with_id() => Some(self.failure(joined)),
        };
        if let Some(f) = &failed {
            tracing::error!("{f}: stopping swarmd");
        }
        self.stop.send_replace(true);
        let rest = async {
            while let Some(joined) = self.set.join_next_with_id().await {
                if let Err(f) = self.outcome(joined) {
                    tracing::warn!("while stopping: {f}");
                }
            }
        };
        if tokio::time::timeout(GRACE, rest).await.is_err() {
            let left: Vec<&str> = self.names.values().copied().collect();
            tracing::warn!(
                "aborting parts that did not stop in {GRACE:?}: {}",
                left.join(", ")
            );
            self.set.shutdown().await;
        }
        failed.map_or(Ok(()), Err)
    }

    fn outcome(
        &mut self,
        joined: Result<(Id, Result<(), String>), tokio::task::JoinError>,
    ) -> Result<(), PartFailed> {
        let (part, result) = self.named(joined);
        result.map_err(|message| PartFailed { part, message })
    }

    fn failure(
        &mut self,
        joined: Result<(Id, Result<(), String>), tokio::task::JoinError>,
    ) -> PartFailed {
        let (part, result) = self.named(joined);
        // a part that returns `Ok` before the shutdown still failed to keep running
        let message = result
            .err()
            .unwrap_or_else(|| "ended before the shutdown".into());
        PartFailed { part, message }
    }

    fn named(
        &mut self,
        joined: Result<(Id, Result<(), String>), tokio::task::JoinError>,
    ) -> (&'static str, Result<(), String>) {
        let (id, result) = match joined {
            Ok((id, r)) => (id, r),
            Err(e) if e.is_panic() => (e.id(), Err("panicked".into())),
            Err(e) => (e.id(), Err("cancelled".into())),
        };
        (self.names.remove(&id).unwrap_or("a part"), result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_failing_part_stops_every_part_and_is_named() {
        let mut parts = Parts::new();
        let stopped = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stopped.clone();
        let shutdown = parts.shutdown();
        parts.spawn("listener", async move {
            shutdown.wait().await;
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
            Ok(())
        });
        parts.spawn("raft", async { Err("storage failed".into()) });
        let r = parts.run(std::future::pending()).await;
        assert_eq!(
            r,
            Err(PartFailed {
                part: "raft",
                message: "storage failed".into()
            })
        );
        assert!(stopped.load(std::sync::atomic::Ordering::SeqCst));
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_waits_then_aborts_a_stuck_part() {
        let mut parts = Parts::new();
        parts.spawn("stuck", std::future::pending());
        parts.spawn_until_shutdown("driver", std::future::pending());
        let start = tokio::time::Instant::now();
        assert_eq!(parts.run(async {}).await, Ok(()));
        assert!(start.elapsed() >= GRACE);
    }

    #[tokio::test]
    async fn a_part_that_returns_early_is_a_failure() {
        let mut parts = Parts::new();
        parts.spawn_until_shutdown("driver", async { Ok(()) });
        let r = parts.run(std::future::pending()).await.unwrap_err();
        assert_eq!(r.part, "driver");
        assert_eq!(r.message, "ended unexpectedly");
    }
}
