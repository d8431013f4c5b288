//! Small shared pieces: time (`Clock`, system and manual), id generation, shutdown signal.
//!
//! Must not: depend on any other module of the crate.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Milliseconds since the Unix epoch: the one time unit stored in the cluster state.
pub type Millis = u64;

/// A source of time, injected so controllers and tests never read the wall clock themselves.
pub trait Clock: Send + Sync + 'static {
    /// Now, in milliseconds since the Unix epoch.
    fn now(&self) -> Millis;
}

/// The real clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Millis {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// A clock that only moves when told (simulations and tests).
#[derive(Clone, Debug, Default)]
pub struct ManualClock {
    now: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock showing `start`.
    pub fn new(start: Millis) -> Self {
        ManualClock {
            now: Arc::new(AtomicU64::new(start)),
        }
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: std::time::Duration) {
        self.now.fetch_add(by.as_millis() as u64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Millis {
        self.now.load(Ordering::SeqCst)
    }
}

/// Generates object ids: 25 lowercase base-36 characters, like docker's.
pub trait IdSource: Send {
    /// A fresh id.
    fn next_id(&mut self) -> String;
}

/// Random ids from the OS generator.
#[derive(Default)]
pub struct RandomIds;

impl IdSource for RandomIds {
    fn next_id(&mut self) -> String {
        const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
        (0..25)
            .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
            .collect()
    }
}

/// Deterministic ids for tests and simulations (seeded counter).
#[derive(Default)]
pub struct SeqIds {
    prefix: String,
    n: u64,
}

impl SeqIds {
    /// Ids `{prefix}000001`, `{prefix}000002`, ...
    pub fn new(prefix: &str) -> Self {
        SeqIds {
            prefix: prefix.to_string(),
            n: 0,
        }
    }
}

impl IdSource for SeqIds {
    fn next_id(&mut self) -> String {
        self.n += 1;
        format!("{}{:06}", self.prefix, self.n)
    }
}

/// Runs `f`, a CPU-bound step (a controller over the whole state, a large encoding), so that it does not hold
/// up the other tasks of the runtime: on a multi-threaded runtime the worker hands its queued tasks (heartbeats,
/// Raft, the control API) to another thread for the duration; elsewhere it just runs `f`.
pub fn cpu_bound<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_clocks() {
        let id = RandomIds.next_id();
        assert_eq!(id.len(), 25);
        assert!(id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
        let mut s = SeqIds::new("t");
        assert_eq!(s.next_id(), "t000001");
        let c = ManualClock::new(1000);
        c.advance(std::time::Duration::from_secs(2));
        assert_eq!(c.now(), 3000);
        assert!(SystemClock.now() > 1_700_000_000_000);
    }
}
