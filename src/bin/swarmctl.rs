//! `swarmctl`: parses arguments and calls `swarm::cli::run`, nothing else.

fn main() {
    // End quietly, as SIGPIPE would, when the reader of our output goes away; see `die_of_sigpipe`.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if swarm::cli::output::is_closed_stdout_panic(message) {
            swarm::cli::output::die_of_sigpipe();
        }
        default_hook(info);
    }));
    std::process::exit(swarm::cli::run(std::env::args_os()));
}
