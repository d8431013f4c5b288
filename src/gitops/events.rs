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
                // reading a file is an event too (inotify's open/close): the watcher's own reads must not
                // trigger rounds, only changes do
                let names: BTreeSet<String> = events
                    .iter()
                    .filter(|e| !matches!(e.kind, notify::EventKind::Access(_)))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reading_a_stack_file_is_no_change_writing_one_is() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().canonicalize().unwrap();
        std::fs::write(d.join("read.yml"), "services: {}\n").unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let _watch = watch(&d, Duration::from_millis(50), tx).unwrap();
        // what a round does to every file: open, read, close
        let _ = std::fs::read(d.join("read.yml")).unwrap();
        std::fs::write(d.join("written.yml"), "services: {}\n").unwrap();
        let got = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("an event batch")
            .expect("the channel stays open");
        let want: BTreeSet<String> = ["written".to_string()].into();
        assert_eq!(got, Some(want));
    }
}
