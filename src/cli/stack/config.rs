//! `swarmctl stack config | validate`: local commands that load stack files and print the result or the problems.
//!
//! Must not: talk to the cluster.

use std::io::Write;

use super::{ConfigArgs, ConfigFormat, ValidateArgs};
use crate::stack::{self, LoadOptions};

fn print_problems(err: &stack::StackError) {
    for p in &err.problems {
        eprintln!("error: {p}");
    }
}

/// `stack config`.
pub(super) fn config(args: ConfigArgs) -> i32 {
    let loaded = match stack::load(&args.files, &LoadOptions::default()) {
        Ok(l) => l,
        Err(e) => {
            print_problems(&e);
            return 1;
        }
    };
    for w in &loaded.warnings {
        eprintln!("{w}");
    }
    for p in &loaded.deploy_problems {
        eprintln!("warning: {p} (a deploy would refuse this)");
    }
    let text = match args.format {
        ConfigFormat::Json => serde_json::to_string_pretty(&loaded.stack).map(|mut s| {
            s.push('\n');
            s
        }),
        ConfigFormat::Yaml => serde_saphyr::to_string(&loaded.stack).map_err(|e| {
            // fall back to the JSON error type for one error path
            serde_json::Error::io(std::io::Error::other(e.to_string()))
        }),
    };
    match text {
        Ok(t) => {
            let mut out = std::io::stdout().lock();
            match out.write_all(t.as_bytes()).and_then(|_| out.flush()) {
                Ok(()) => 0,
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                    crate::cli::output::die_of_sigpipe()
                }
                Err(e) => {
                    eprintln!("error: cannot print the stack: {e}");
                    1
                }
            }
        }
        Err(e) => {
            eprintln!("error: cannot print the stack: {e}");
            1
        }
    }
}

/// `stack validate`.
pub(super) fn validate(args: ValidateArgs) -> i32 {
    let loaded = match stack::load(&args.files, &LoadOptions::default()) {
        Ok(l) => l,
        Err(e) => {
            print_problems(&e);
            return 1;
        }
    };
    for w in &loaded.warnings {
        eprintln!("{w}");
    }
    match stack::convert::convert(&args.name, &loaded.stack) {
        Ok(spec) => {
            let files: Vec<String> = args.files.iter().map(|f| f.display().to_string()).collect();
            println!(
                "{}: valid ({} service{}, {} secret{}, {} config{}, {} network{})",
                files.join(", "),
                spec.services.len(),
                plural(spec.services.len()),
                spec.secrets.len() + spec.external_secrets.len(),
                plural(spec.secrets.len() + spec.external_secrets.len()),
                spec.configs.len() + spec.external_configs.len(),
                plural(spec.configs.len() + spec.external_configs.len()),
                spec.networks.len() + spec.external_networks.len(),
                plural(spec.networks.len() + spec.external_networks.len()),
            );
            0
        }
        Err(e) => {
            print_problems(&e);
            1
        }
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}
