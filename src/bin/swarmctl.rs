//! `swarmctl`: parses arguments and calls `swarm::cli::run`, nothing else.

fn main() {
    // Like other command-line tools, end quietly when the reader of our output goes away
    // (`swarmctl service ls | head -1`): Rust ignores SIGPIPE by default, which turns every later
    // `println!` into a panic. Sockets are unaffected (std and tokio write to them with MSG_NOSIGNAL).
    // SAFETY: called first in main, before any thread exists; SIG_DFL is a valid disposition.
    unsafe {
        let _ = nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGPIPE,
            nix::sys::signal::SigHandler::SigDfl,
        );
    }
    std::process::exit(swarm::cli::run(std::env::args_os()));
}
