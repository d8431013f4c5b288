//! Catching a panic inside the storage library: redb asserts on some corrupt pages (debug builds panic where
//! release builds return `Corrupted`). [`catch`] runs a storage call so that such a panic becomes an error
//! string (the panic's message and location) instead of unwinding through openraft, and keeps the panic hook
//! from printing a backtrace for it: the user sees one error naming the file, not a panic.
//!
//! Must not: catch panics of anything but storage calls (a panic in the state machine is a bug and stays one).

use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

thread_local! {
    /// Set while this thread runs a storage call under [`catch`].
    static GUARDED: Cell<bool> = const { Cell::new(false) };
    /// The message of the last panic caught on this thread.
    static CAUGHT: RefCell<Option<String>> = const { RefCell::new(None) };
}

static HOOK: Once = Once::new();

/// Installs (once per process) a panic hook that records, instead of printing, panics raised inside
/// [`catch`]; every other panic goes to the hook that was installed before.
fn install_hook() {
    HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if GUARDED.with(Cell::get) {
                let location = info
                    .location()
                    .map(|l| format!(" at {}:{}", l.file(), l.line()))
                    .unwrap_or_default();
                let message = payload_message(info.payload());
                CAUGHT.with(|c| *c.borrow_mut() = Some(format!("{message}{location}")));
            } else {
                previous(info);
            }
        }));
    });
}

fn payload_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}

/// Runs the storage call `f`; a panic inside it is returned as `Err` with its message and location.
pub(crate) fn catch<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    install_hook();
    let was = GUARDED.with(|g| g.replace(true));
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    GUARDED.with(|g| g.set(was));
    result.map_err(|payload| {
        CAUGHT
            .with(|c| c.borrow_mut().take())
            .unwrap_or_else(|| payload_message(payload.as_ref()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_an_error_with_its_location() {
        assert_eq!(catch(|| 5), Ok(5));
        let e = catch(|| -> u32 { panic!("page 7 is not a leaf") }).unwrap_err();
        assert!(e.starts_with("page 7 is not a leaf at "), "{e}");
        assert!(e.contains("guard.rs"), "{e}");
        // outside a guarded call the flag is off again
        assert!(!GUARDED.with(Cell::get));
    }
}
