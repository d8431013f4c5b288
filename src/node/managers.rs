//! The managers a node knows (its agent session, its certificate renewal): the addresses in the order they are
//! tried, kept current by the sessions.

use std::sync::Arc;

/// The managers an agent knows, in the order it tries them: the leader a refusal named first, then the list the
/// last session gave (the leader first), moving on to the next one after a failure. Shared, so the node can keep
/// it (a worker writes it to `worker.json`).
#[derive(Clone, Default)]
pub struct ManagerList(Arc<std::sync::Mutex<Managers>>);

#[derive(Default)]
struct Managers {
    addrs: Vec<String>,
    current: usize,
    hint: Option<String>,
}

impl ManagerList {
    /// A list starting with `addrs`.
    pub fn new(addrs: Vec<String>) -> Self {
        ManagerList(Arc::new(std::sync::Mutex::new(Managers {
            addrs,
            ..Default::default()
        })))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Managers> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every manager address known now.
    pub fn addrs(&self) -> Vec<String> {
        self.lock().addrs.clone()
    }

    /// The manager to dial now.
    pub(super) fn target(&self) -> Option<String> {
        let mut m = self.lock();
        if let Some(hint) = m.hint.take() {
            return Some(hint);
        }
        let n = m.addrs.len();
        (n > 0).then(|| m.addrs[m.current % n].clone())
    }

    /// The manager dialed last did not serve a session: try the next one.
    pub(super) fn failed(&self) {
        let mut m = self.lock();
        m.current = m.current.wrapping_add(1);
    }

    /// A refusal named the leader: dial it next.
    pub(super) fn redirect(&self, addr: String) {
        self.lock().hint = Some(addr);
    }

    /// A session gave the managers' addresses (the leader first).
    pub(super) fn learned(&self, addrs: Vec<String>) {
        if addrs.is_empty() {
            return;
        }
        let mut m = self.lock();
        m.addrs = addrs;
        m.current = 0;
    }
}
