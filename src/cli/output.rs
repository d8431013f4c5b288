//! Output helpers shared by the commands: docker-style aligned tables, one-JSON-object-per-line, ids, and human
//! durations ("Running 5 minutes ago").
//!
//! Must not: talk to the cluster.

/// A table printed like docker's tabwriter: columns padded to the widest cell plus three spaces.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles.
    pub fn new(header: &[&str]) -> Self {
        Table {
            header: header.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as text.
    pub fn render(&self) -> String {
        let cols = self.header.len();
        let mut widths = vec![0usize; cols];
        for row in std::iter::once(&self.header).chain(self.rows.iter()) {
            for (i, cell) in row.iter().enumerate().take(cols) {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&self.header).chain(self.rows.iter()) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate().take(cols) {
                line.push_str(cell);
                if i + 1 < cols {
                    line.push_str(&" ".repeat(widths[i] - cell.chars().count() + 3));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// The first 12 characters of an id, as docker shows them.
pub fn short_id(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// "5 seconds", "About a minute", "3 hours": docker's `HumanDuration`.
pub fn human_duration(ms: u64) -> String {
    let secs = ms / 1000;
    match secs {
        0 => "Less than a second".into(),
        1 => "1 second".into(),
        2..=59 => format!("{secs} seconds"),
        60..=119 => "About a minute".into(),
        120..=3599 => format!("{} minutes", secs / 60),
        3600..=7199 => "About an hour".into(),
        7200..=172_799 => format!("{} hours", secs / 3600),
        _ => format!("{} days", secs / 86_400),
    }
}

/// Ends the process the way an unhandled SIGPIPE does (killed by signal 13, no message): what a command-line
/// tool does when the reader of its output went away (`swarmctl service ls | head -1`). SIGPIPE itself stays
/// ignored while swarmctl runs, so that a write to the control socket after the manager closed it is an error
/// we report rather than a silent death; only a print to a closed standard output comes here.
pub fn die_of_sigpipe() -> ! {
    use nix::sys::signal::{raise, signal, SigHandler, Signal};
    // SAFETY: SIG_DFL is a valid disposition, and nothing of ours runs after the signal is delivered.
    unsafe {
        let _ = signal(Signal::SIGPIPE, SigHandler::SigDfl);
    }
    let _ = raise(Signal::SIGPIPE);
    std::process::exit(128 + Signal::SIGPIPE as i32)
}

/// Whether `message` is the panic of a `println!` into a closed standard output.
pub fn is_closed_stdout_panic(message: &str) -> bool {
    message.starts_with("failed printing to stdout")
        && message.contains(&format!("(os error {})", nix::errno::Errno::EPIPE as i32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_like_docker() {
        let mut t = Table::new(&["ID", "NAME", "REPLICAS"]);
        t.row(vec!["abc".into(), "demo_web".into(), "3/3".into()]);
        t.row(vec!["defghi".into(), "x".into(), "0/1".into()]);
        assert_eq!(
            t.render(),
            "ID       NAME       REPLICAS\nabc      demo_web   3/3\ndefghi   x          0/1\n"
        );
        assert_eq!(short_id("0123456789abcdefgh"), "0123456789ab");
        assert_eq!(human_duration(90_000), "About a minute");
        assert_eq!(human_duration(5_000), "5 seconds");
    }
}
