//! Service networking end to end on one node (issue 11), as root: a real `swarmd` in a network namespace the
//! test creates (its own loopback carries the cluster port; its bridges, NAT and task namespaces live inside,
//! and go with the namespace), a stack of three replicas of an HTTP server on the same port behind a published
//! port and a client task: the client finds `tasks.web` (three addresses) and reaches `web` through its VIP, the
//! published port answers from every replica, and after a scale down to one, DNS and the published port follow.
//! Skipped (with a line saying so) without root, `ip`, `nsenter`, nftables' `nft` or a busybox binary.

use std::collections::BTreeSet;

use super::cluster::{wait_for, Swarmd};
use super::netlab::{addresses, in_task, pid_of, service_net_tools, wget_in_ns, wget_in_task, Ns};

/// The bodies the published port answers with over `n` requests, from inside namespace `ns`.
fn published(ns: &str, busybox: &str, port: u16, n: usize) -> BTreeSet<String> {
    let url = format!("http://127.0.0.1:{port}/");
    (0..n)
        .filter_map(|_| wget_in_ns(ns, busybox, &url))
        .collect()
}

#[test]
fn replicas_are_found_by_name_reached_by_vip_and_published_on_the_node() {
    let Some(busybox) = service_net_tools() else {
        return;
    };
    let Some(ns) = Ns::create(format!("swnet{}", std::process::id() % 100_000)) else {
        eprintln!("skipped: cannot create a network namespace");
        return;
    };
    let d = Swarmd::start_founder_in(ns.0.clone(), "127.0.0.1".into(), 4242);
    let marker = format!("sleep {}", 7_000_000 + std::process::id());
    let files = tempfile::tempdir().unwrap();
    let stack = files.path().join("web.yml");
    std::fs::write(
        &stack,
        format!(
            r#"services:
  web:
    image: x
    command: [sh, -c, "d=$$(mktemp -d) && echo web $$SLOT > $$d/index.html && exec {busybox} httpd -f -p 8080 -h $$d"]
    environment:
      SLOT: "{{{{.Task.Slot}}}}"
    deploy:
      replicas: 3
    ports:
      - "18080:8080"
    stop_grace_period: 1s
  client:
    image: x
    command: [sh, -c, "exec {marker}"]
    stop_grace_period: 1s
"#
        ),
    )
    .unwrap();
    d.ctl_ok(&["stack", "deploy", "-c", stack.to_str().unwrap(), "demo"]);
    let client = wait_for(30, "the client task", || pid_of(&marker));

    // every replica by tasks.NAME, the VIP by the service's names
    let tasks = wait_for(30, "tasks.web to answer three addresses", || {
        let out = in_task(client, &[busybox, "nslookup", "tasks.web"])?;
        let a = addresses(&out);
        (a.len() == 3).then_some(a)
    });
    let vip = wait_for(30, "web to answer its VIP", || {
        let a = addresses(&in_task(client, &[busybox, "nslookup", "web"])?);
        (a.len() == 1).then_some(a)
    });
    assert!(
        vip.is_disjoint(&tasks),
        "web answers a VIP, not a task: {vip:?} {tasks:?}"
    );
    let full = addresses(&in_task(client, &[busybox, "nslookup", "demo_web"]).unwrap_or_default());
    assert_eq!(full, vip, "STACK_SERVICE answers the same VIP");
    // the VIP spreads the client's connections over the replicas (busybox's wget crashes with -T: `timeout`)
    let url = format!("http://{}:8080/", vip.iter().next().unwrap());
    let through_vip = wait_for(30, "every replica through the VIP", || {
        let seen: BTreeSet<String> = (0..12)
            .filter_map(|_| wget_in_task(client, busybox, &url))
            .collect();
        if seen.len() != 3 {
            eprintln!("through the VIP so far: {seen:?}");
        }
        (seen.len() == 3).then_some(seen)
    });
    assert_eq!(
        through_vip,
        BTreeSet::from(["web 1".to_string(), "web 2".into(), "web 3".into()])
    );
    // the published port answers on the node from every replica
    wait_for(
        30,
        "the published port to answer from every replica",
        || (published(&ns.0, busybox, 18080, 12).len() == 3).then_some(()),
    );

    // scale down: DNS and the published port follow
    d.ctl_ok(&["service", "scale", "demo_web=1"]);
    wait_for(30, "tasks.web to follow the scale down", || {
        let out = in_task(client, &[busybox, "nslookup", "tasks.web"])?;
        (addresses(&out).len() == 1).then_some(())
    });
    wait_for(30, "the published port to follow the scale down", || {
        (published(&ns.0, busybox, 18080, 6).len() == 1).then_some(())
    });
    d.ctl_ok(&["stack", "rm", "demo"]);
    drop(d);
}
