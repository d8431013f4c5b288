//! `swarmd __netplane MAP.json [--underlay ADDR] [--task TASK_ID=NETNS_FILE]...`: a hidden entry that
//! converges the current network namespace to a map once and plumbs the given tasks into their namespaces (a
//! `/run/netns/NAME` or `/proc/PID/ns/net`), then exits — what the integration tests run inside the
//! namespaces they create to stand for nodes, and a way to look at what a map does on a scratch namespace.

use std::net::IpAddr;
use std::path::PathBuf;

use crate::model::netmap::NetworkMap;

use super::{attachments, converge, plumb, Netlink};

/// The hidden first argument.
pub const TOOL_ARG: &str = "__netplane";

struct Args {
    map: PathBuf,
    underlay: Option<IpAddr>,
    tasks: Vec<(String, PathBuf)>,
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let map = args
        .next()
        .ok_or("usage: swarmd __netplane MAP.json [--underlay ADDR] [--task ID=NETNS]...")?;
    let mut out = Args {
        map: map.into(),
        underlay: None,
        tasks: Vec::new(),
    };
    while let Some(a) = args.next() {
        let value = args.next().ok_or_else(|| format!("{a} needs a value"))?;
        match a.as_str() {
            "--underlay" => {
                out.underlay = Some(
                    value
                        .parse()
                        .map_err(|_| format!("--underlay {value:?}: not an IP address"))?,
                )
            }
            "--task" => {
                let (id, ns) = value
                    .split_once('=')
                    .ok_or_else(|| format!("--task {value:?}: expected TASK_ID=NETNS_FILE"))?;
                out.tasks.push((id.to_string(), ns.into()));
            }
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(out)
}

async fn run(args: Args) -> Result<(), String> {
    let text =
        std::fs::read_to_string(&args.map).map_err(|e| format!("{}: {e}", args.map.display()))?;
    let map: NetworkMap = serde_json::from_str(&text).map_err(|e| {
        format!(
            "{}: line {} column {}: {e}",
            args.map.display(),
            e.line(),
            e.column()
        )
    })?;
    let underlay = super::underlay_v4(args.underlay);
    let nl = Netlink::here().map_err(|e| e.to_string())?;
    let done = converge(&nl, &map, underlay, &mut None)
        .await
        .map_err(|e| e.to_string())?;
    for p in &done.problems {
        eprintln!("warning: {p}");
    }
    println!("converged: {} changes", done.ops.len());
    for op in &done.ops {
        println!("  {op:?}");
    }
    for (task, ns) in &args.tasks {
        let file = std::fs::File::open(ns).map_err(|e| format!("{}: {e}", ns.display()))?;
        let a = attachments(&map, underlay, task)?;
        if a.is_empty() {
            return Err(format!(
                "task {task} has no endpoint in {}",
                args.map.display()
            ));
        }
        use std::os::fd::AsFd;
        plumb(file.as_fd(), &a)
            .await
            .map_err(|e| format!("task {task}: {e}"))?;
        println!(
            "plumbed task {task}: {}",
            a.iter()
                .map(|a| format!("{} {}/{}", a.ifname, a.address, a.prefix))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}

/// Call first thing in `main`: when started as `swarmd __netplane …`, runs the tool and exits; otherwise
/// returns at once.
pub fn maybe_run_tool() {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() != Some(TOOL_ARG) {
        return;
    }
    let result = parse(args).and_then(|a| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("starting a runtime: {e}"))?
            .block_on(run(a))
    });
    match result {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("swarmd {TOOL_ARG}: {e}");
            std::process::exit(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Result<Args, String> {
        parse(s.split_whitespace().map(String::from))
    }

    #[test]
    fn arguments_are_checked_with_what_is_wrong() {
        let a = args("m.json --underlay 192.168.77.2 --task t1=/run/netns/x").unwrap();
        assert_eq!(a.underlay, Some("192.168.77.2".parse().unwrap()));
        assert_eq!(
            a.tasks,
            vec![("t1".to_string(), PathBuf::from("/run/netns/x"))]
        );
        assert_eq!(
            args("m.json --task t1").err().unwrap(),
            "--task \"t1\": expected TASK_ID=NETNS_FILE"
        );
        assert_eq!(
            args("m.json --underlay").err().unwrap(),
            "--underlay needs a value"
        );
        assert_eq!(
            args("m.json --bogus 1").err().unwrap(),
            "unknown option --bogus"
        );
    }
}
