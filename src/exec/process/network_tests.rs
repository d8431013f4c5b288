//! A process task with network attachments (root): its own network namespace, plumbed before it runs (the
//! first thing it does is read its addresses), its resolver, its health checks inside that namespace, its veth
//! gone with it; a bad map entry fails the start naming the entry. The executor runs on a thread inside a
//! namespace this test creates, so the bridge is never the host's.

use std::os::fd::AsFd;
use std::time::Duration;

use tokio::sync::watch;

use super::tests::{executor, is_root, spec, stdout_of};
use super::*;
use crate::exec::{CheckResult, ExitStatus};
use crate::model::netmap::{Endpoint, NetworkInfo, NetworkMap};
use crate::network::{names, Plane};

fn ip(args: &[&str]) -> bool {
    std::process::Command::new("ip")
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn links(ns: &str) -> String {
    std::process::Command::new("ip")
        .args(["-n", ns, "-o", "link"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

struct Namespace(String);

impl Drop for Namespace {
    fn drop(&mut self) {
        ip(&["netns", "del", &self.0]);
    }
}

fn map(endpoints: &[(&str, &str)]) -> NetworkMap {
    NetworkMap {
        networks: vec![NetworkInfo {
            id: "pnet".into(),
            name: "t_pnet".into(),
            driver: "bridge".into(),
            subnet: "10.80.0.0/24".into(),
            gateway: "10.80.0.1".into(),
            ..Default::default()
        }],
        endpoints: endpoints
            .iter()
            .map(|(task, addr)| {
                std::sync::Arc::new(Endpoint {
                    task_id: task.to_string(),
                    network_id: "pnet".into(),
                    address: addr.to_string(),
                    ready: true,
                    ..Default::default()
                })
            })
            .collect(),
        ..Default::default()
    }
}

/// Runs `body` on a thread inside a fresh namespace (`None`: not root, skipped).
fn in_test_namespace(test: &str, body: impl AsyncFnOnce(&str) + Send) {
    if !is_root() || !ip(&["netns", "list"]) {
        eprintln!("{test}: skipped, needs root and `ip netns`");
        return;
    }
    let ns = format!("swnpp{}{}", std::process::id() % 100_000, test.len());
    ip(&["netns", "del", &ns]);
    assert!(ip(&["netns", "add", &ns]));
    let guard = Namespace(ns.clone());
    std::thread::scope(|s| {
        s.spawn(|| {
            let file = std::fs::File::open(format!("/run/netns/{ns}")).expect("namespace");
            nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(body(&ns));
        })
        .join()
        .expect("test thread");
    });
    drop(guard);
}

#[test]
fn a_task_runs_plumbed_in_its_own_namespace_and_is_checked_there() {
    in_test_namespace("plumbed", async |ns| {
        let (_tmp, exec) = executor();
        let (_tx, rx) = watch::channel(map(&[("np1", "10.80.0.5"), ("np2", "10.80.0.6")]));
        let exec = exec.with_network(Plane::new(rx, None));
        // its very first command sees its address: it starts only once plumbed
        let sh = |id: &str, s: &str| spec(id, &["sh", "-c", s]);
        let ctl = exec
            .controller(sh(
                "np1",
                "cat /proc/net/fib_trie /etc/resolv.conf; sleep 30",
            ))
            .expect("controller");
        ctl.prepare().await.expect("prepare");
        ctl.start().await.expect("start");
        let veth = names::veth_name("np1", "pnet");
        assert!(links(ns).contains(&veth), "{}", links(ns));
        let t = Duration::from_secs(10);
        let argv = |s: &str| vec!["sh".to_string(), "-c".to_string(), s.to_string()];
        let Ok(CheckResult::Exited { code: 0, output }) =
            ctl.exec_check(&argv("cat /proc/net/fib_trie"), t).await
        else {
            panic!("the health check did not run");
        };
        assert!(
            output.contains("10.80.0.5"),
            "a check runs in the task's namespace:\n{output}"
        );
        ctl.terminate().await.expect("terminate");
        let _ = ctl.wait().await;
        let out = stdout_of(&exec, "np1");
        assert!(out.contains("10.80.0.5"), "{out}");
        assert!(out.contains("nameserver 10.80.0.1"), "{out}");
        ctl.remove().await.expect("remove");
        assert!(
            !links(ns).contains(&veth),
            "the veth goes with the task: {}",
            links(ns)
        );

        // a task without an endpoint shares the node's namespace (where the bridge holds the gateway)
        let ctl = exec
            .controller(sh("plain", "cat /proc/net/fib_trie"))
            .expect("controller");
        ctl.prepare().await.expect("prepare");
        ctl.start().await.expect("start");
        assert_eq!(ctl.wait().await.expect("wait"), ExitStatus::exited(0));
        let plain = stdout_of(&exec, "plain");
        assert!(
            plain.contains("10.80.0.1") && !plain.contains("10.80.0.5"),
            "{plain}"
        );
    });
}

#[test]
fn a_bad_endpoint_fails_the_start_naming_it() {
    in_test_namespace("bad", async |_| {
        let (_tmp, exec) = executor();
        let (_tx, rx) = watch::channel(map(&[("bad1", "10.99.0.5")]));
        let exec = exec.with_network(Plane::new(rx, None));
        let ctl = exec
            .controller(spec("bad1", &["true"]))
            .expect("controller");
        ctl.prepare().await.expect("prepare");
        let e = ctl
            .start()
            .await
            .expect_err("a task address outside its subnet");
        assert!(
            e.to_string().contains(
                "endpoints[0] (task bad1).address: 10.99.0.5 is not a task address of t_pnet"
            ),
            "{e}"
        );
    });
}
