//! Service networking across nodes (issue 11), as root: three real `swarmd` — a manager (node A) and two
//! workers joined with the worker token (B and C) — each in a network namespace of the test's own, joined by
//! veth pairs to a bridge in a hub namespace (underlay addresses only inside those namespaces; each node's
//! cluster port and VXLAN underlay on its veth address). A stack's HTTP server is constrained to B, its client
//! to A: the client finds the server by name (its VIP; `tasks.server`: B's task) and reaches it over the VXLAN
//! overlay, through the VIP and the task's own address; the published port (ingress) answers on C, which runs
//! no task of the stack, and on A, each asked at its own address from inside its namespace.
//! Skipped (with a line saying so) without root, `ip`, `nsenter`, nftables' `nft` or a busybox binary.

use std::collections::BTreeMap;

use super::cluster::{wait_for, Swarmd};
use super::multinode::placement;
use super::netlab::{addresses, in_task, pid_of, service_net_tools, wget_in_ns, wget_in_task, Lab};

#[test]
fn a_task_on_one_node_reaches_a_service_on_another_by_name_and_the_mesh_answers_on_a_third() {
    let Some(busybox) = service_net_tools() else {
        return;
    };
    let Some(lab) = Lab::create("sm", 3, 232) else {
        eprintln!("skipped: cannot create network namespaces");
        return;
    };
    let a = Swarmd::start_founder_in_with(lab.ns(1), lab.addr(1), 4242, &["--hostname", "na"]);
    let b = Swarmd::start_worker_in(&a, "nb", lab.ns(2), lab.addr(2));
    let c = Swarmd::start_worker_in(&a, "nc", lab.ns(3), lab.addr(3));

    let marker = format!("sleep {}", 7_100_000 + std::process::id());
    let files = tempfile::tempdir().unwrap();
    let stack = files.path().join("multi.yml");
    std::fs::write(
        &stack,
        format!(
            r#"services:
  server:
    image: x
    command: [sh, -c, "d=$$(mktemp -d) && echo server on $$NODE > $$d/index.html && exec {busybox} httpd -f -p 8080 -h $$d"]
    environment:
      NODE: "{{{{.Node.Hostname}}}}"
    ports:
      - "18090:8080"
    deploy:
      replicas: 2
      placement:
        constraints: [node.hostname == nb]
    stop_grace_period: 1s
  client:
    image: x
    command: [sh, -c, "exec {marker}"]
    deploy:
      placement:
        constraints: [node.role == manager]
    stop_grace_period: 1s
"#
        ),
    )
    .unwrap();
    a.ctl_ok(&["stack", "deploy", "-c", stack.to_str().unwrap(), "multi"]);
    let client = wait_for(60, "the client task", || pid_of(&marker));
    wait_for(60, "both server tasks running on nb", || {
        (placement(&a, "multi_server") == BTreeMap::from([("nb".to_string(), 2)])).then_some(())
    });
    assert_eq!(
        placement(&a, "multi_client"),
        BTreeMap::from([("na".to_string(), 1)]),
        "the client runs on the manager (node A)"
    );

    // by name from A: the VIP, and B's two tasks behind tasks.server
    let tasks = wait_for(30, "tasks.server to answer B's two tasks", || {
        let a = addresses(&in_task(client, &[busybox, "nslookup", "tasks.server"])?);
        (a.len() == 2).then_some(a)
    });
    let vip = wait_for(30, "server to answer its VIP", || {
        let a = addresses(&in_task(client, &[busybox, "nslookup", "server"])?);
        (a.len() == 1).then_some(a)
    });
    assert!(vip.is_disjoint(&tasks), "{vip:?} {tasks:?}");

    // over the overlay: by name (the VIP's DNAT in A's task namespace, then VXLAN to B), and a task address
    let body = wait_for(30, "the server by name from node A", || {
        wget_in_task(client, busybox, "http://server:8080/")
    });
    assert_eq!(body, "server on nb");
    let task_addr = tasks.iter().next().unwrap();
    assert_eq!(
        wget_in_task(client, busybox, &format!("http://{task_addr}:8080/")).as_deref(),
        Some("server on nb"),
        "a task address of B straight from A's task"
    );

    // the published port on C (no task there) and on A, each from inside its namespace at its address
    assert!(
        placement(&a, "multi_server").keys().all(|n| n == "nb")
            && !placement(&a, "multi_client").contains_key("nc"),
        "nc runs no task of the stack"
    );
    for (i, node) in [(3, "nc"), (1, "node A")] {
        let url = format!("http://{}:18090/", lab.addr(i));
        let got = wait_for(30, &format!("the published port on {node}"), || {
            wget_in_ns(&lab.ns(i), busybox, &url)
        });
        assert_eq!(got, "server on nb", "published port on {node}");
        // every request is answered, not only the first
        for _ in 0..5 {
            assert_eq!(
                wget_in_ns(&lab.ns(i), busybox, &url).as_deref(),
                Some("server on nb"),
                "published port on {node}, again"
            );
        }
    }
    // and on B itself, where the tasks are local
    assert_eq!(
        wget_in_ns(
            &lab.ns(2),
            busybox,
            &format!("http://{}:18090/", lab.addr(2))
        )
        .as_deref(),
        Some("server on nb")
    );

    a.ctl_ok(&["stack", "rm", "multi"]);
    drop((c, b, a));
}
