//! `swarmctl`: parses arguments and calls `swarm::cli::run`, nothing else.

fn main() {
    std::process::exit(swarm::cli::run(std::env::args_os()));
}
