//! File-system events of a watched directory (notify, debounced by notify-debouncer-full) turned into the
//! names of the stacks they touch. The watcher's periodic full rescan covers what events miss (inotify limits,
//! NFS).
//!
//! Must not: decide anything about a stack.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::RecursiveMode;
use notify_debouncer_full::{new_debouncer, DebounceEventResult, Debouncer, RecommendedCache};
use tokio::sync::mpsc;

use super::scan::stack_of;

/// A running watch; events stop when it is dropped.
pub type Watch = Debouncer<notify::RecommendedWatcher, RecommendedCache>;

/// Watches `dir` (recursively); each debounced batch of events becomes the set of stack names it touches,
/// sent to `tx` (an error becomes an empty set: the caller rescans everything).
pub fn watch(
    dir: &Path,
    debounce: Duration,
    tx: mpsc::UnboundedSender<Option<BTreeSet<String>>>,
) -> Result<Watch, String> {
    let base: PathBuf = dir.to_path_buf();
    let mut debouncer = new_debouncer(debounce, None, move |result: DebounceEventResult| {
        let names = match result {
            Ok(events) => {
                let names: BTreeSet<String> = events
                    .iter()
                    .flat_map(|e| e.paths.iter())
                    .filter_map(|p| stack_of(&base, p))
                    .collect();
                if names.is_empty() {
                    return;
                }
                Some(names)
            }
            Err(_) => None,
        };
        let _ = tx.send(names);
    })
    .map_err(|e| format!("cannot watch {}: {e}", dir.display()))?;
    debouncer
        .watch(dir, RecursiveMode::Recursive)
        .map_err(|e| format!("cannot watch {}: {e}", dir.display()))?;
    Ok(debouncer)
}
