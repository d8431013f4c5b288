//! A container with network attachments (root): created with network mode `none`, plumbed by its pid into
//! the network's bridge with its address, its resolver the network's gateway, reachable from the node, its
//! veth gone with it. The "node" is a network namespace this test creates (the executor runs on a thread
//! inside it, so the bridge never touches the host's).

use std::os::fd::AsFd;

use tokio::sync::watch;

use super::*;
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

fn ip_out(args: &[&str]) -> String {
    std::process::Command::new("ip")
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// The namespace and the container, removed whatever happens.
struct Cleanup {
    ns: String,
    container: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["rm", "-f", &self.container])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        ip(&["netns", "del", &self.ns]);
    }
}

fn map_for(task_id: &str) -> NetworkMap {
    NetworkMap {
        networks: vec![NetworkInfo {
            id: "dknet".into(),
            name: "np_dk".into(),
            driver: "bridge".into(),
            subnet: "10.79.0.0/24".into(),
            gateway: "10.79.0.1".into(),
            vni: 0,
            internal: false,
            ingress: false,
        }],
        peers: vec![],
        endpoints: vec![std::sync::Arc::new(Endpoint {
            task_id: task_id.into(),
            task_name: format!("svc.1.{task_id}"),
            service_id: "svc".into(),
            node_id: "n".into(),
            network_id: "dknet".into(),
            address: "10.79.0.5".into(),
            ready: true,
        })],
        services: vec![],
    }
}

#[test]
fn a_container_with_attachments_is_plumbed_into_its_network() {
    if !nix::unistd::geteuid().is_root() || !ip(&["netns", "list"]) {
        eprintln!("NOTICE: skipping the docker network test: needs root and `ip netns`");
        return;
    }
    let ns = format!("swnpdk{}", std::process::id() % 100_000);
    let id = unique("np");
    ip(&["netns", "del", &ns]);
    let _cleanup = Cleanup {
        ns: ns.clone(),
        container: container_name(&id),
    };
    assert!(ip(&["netns", "add", &ns]) && ip(&["-n", &ns, "link", "set", "lo", "up"]));
    let path = format!("/run/netns/{ns}");
    std::thread::scope(|s| {
        s.spawn(|| {
            let file = std::fs::File::open(&path).expect("the namespace");
            nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(check(&ns, &id));
        })
        .join()
        .expect("the test's thread");
    });
}

async fn check(ns: &str, id: &str) {
    let Some((_dir, exec)) = executor().await else {
        return;
    };
    let (_tx, rx) = watch::channel(map_for(id));
    let exec = exec.with_network(Plane::new(rx, None));
    let ctl = exec.controller(sh(id, "sleep 30")).expect("controller");
    ctl.prepare().await.expect("prepare");
    ctl.start().await.expect("start");
    let info = exec
        .client()
        .inspect_container(&container_name(id), None::<InspectContainerOptions>)
        .await
        .expect("inspect");
    let mode = info.host_config.and_then(|h| h.network_mode);
    assert_eq!(mode.as_deref(), Some("none"));
    let t = Duration::from_secs(10);
    let argv = |s: &str| vec!["sh".to_string(), "-c".to_string(), s.to_string()];
    let Ok(CheckResult::Exited { code: 0, output }) = ctl
        .exec_check(&argv("cat /proc/net/fib_trie /etc/resolv.conf"), t)
        .await
    else {
        panic!("cannot look inside the container");
    };
    assert!(
        output.contains("10.79.0.5"),
        "the container has its address:\n{output}"
    );
    assert!(
        output.contains("nameserver 10.79.0.1"),
        "its resolver is the gateway:\n{output}"
    );
    // reachable from the node: its kernel refuses a closed port (unreachable would time out)
    let to: std::net::SocketAddr = "10.79.0.5:9".parse().unwrap();
    let refused = tokio::time::timeout(t, tokio::net::TcpStream::connect(to)).await;
    assert!(
        matches!(&refused, Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused),
        "connecting from the node: {refused:?}"
    );
    let veth = names::veth_name(id, "dknet");
    let bridge = names::bridge_name("dknet");
    assert!(ip_out(&["-n", ns, "-o", "link", "show", "master", &bridge]).contains(&veth));
    ctl.terminate().await.expect("terminate");
    remove(&exec, ctl.as_ref()).await;
    assert!(
        !ip_out(&["-n", ns, "-o", "link"]).contains(&veth),
        "the veth goes with the task"
    );
}
