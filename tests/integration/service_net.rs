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

/// What one request through the published port got: the body of a 200, or why it failed.
type Answer = Result<String, String>;

/// One HTTP/1.0 request for `path` on a new connection to `127.0.0.1:port` (in the calling thread's namespace).
fn get(port: u16, path: &str) -> Answer {
    use std::io::{Read, Write};
    let timeout = std::time::Duration::from_secs(5);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = std::net::TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: web\r\n\r\n").as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut reply = String::new();
    s.read_to_string(&mut reply)
        .map_err(|e| format!("read: {e}"))?;
    match reply.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.") && head.contains(" 200 ") => {
            Ok(body.trim().to_string())
        }
        _ => Err(format!("bad reply {reply:?}")),
    }
}

/// A client in namespace `ns` requesting `path` on a new connection, one after the other with `pause` between,
/// until `stop` (at most `secs`), recording every answer.
fn client_loop(
    ns: &str,
    port: u16,
    path: &'static str,
    pause: std::time::Duration,
    secs: u64,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    answers: std::sync::Arc<std::sync::Mutex<Vec<Answer>>>,
) -> std::thread::JoinHandle<()> {
    let netns = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let f = std::fs::File::open(&netns).expect("the test's namespace");
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        while !stop.load(std::sync::atomic::Ordering::SeqCst)
            && std::time::Instant::now() < deadline
        {
            let a = get(port, path);
            answers.lock().unwrap().push(a);
            std::thread::sleep(pause);
        }
    })
}

/// A rolling update (stop-first, one task at a time) of three HTTP replicas behind a published port while a
/// client opens a new connection every 20 ms for a page and three more clients each keep a 300 ms request (a
/// CGI script) in flight: every request is answered, first by the old version, at the end by the new one on
/// every replica. Each stopped task leaves the backends (the managers' map) and is drained (`--drain-delay`,
/// 2 s) before its stop signal, so the slow requests it holds finish; the proxy retries a replacement that
/// does not listen yet.
#[test]
fn a_rolling_update_behind_a_published_port_drops_no_request() {
    let Some(busybox) = service_net_tools() else {
        return;
    };
    let Some(ns) = Ns::create(format!("swroll{}", std::process::id() % 100_000)) else {
        eprintln!("skipped: cannot create a network namespace");
        return;
    };
    let d = Swarmd::start_founder_in(ns.0.clone(), "127.0.0.1".into(), 4242);
    let files = tempfile::tempdir().unwrap();
    let stack = files.path().join("web.yml");
    std::fs::write(
        &stack,
        format!(
            r#"services:
  web:
    image: x
    command: [sh, -c, "d=$$(mktemp -d) && mkdir $$d/cgi-bin && echo v$$VERSION web $$SLOT > $$d/index.html && printf '#!/bin/sh\\nsleep 0.3\\nprintf \"Content-Type: text/plain\\\\r\\\\n\\\\r\\\\n\"\\ncat %s\\n' $$d/index.html > $$d/cgi-bin/slow && chmod +x $$d/cgi-bin/slow && exec {busybox} httpd -f -p 8080 -h $$d"]
    environment:
      VERSION: "1"
      SLOT: "{{{{.Task.Slot}}}}"
    deploy:
      replicas: 3
    ports:
      - "18081:8080"
    stop_grace_period: 1s
"#
        ),
    )
    .unwrap();
    d.ctl_ok(&["stack", "deploy", "-c", stack.to_str().unwrap(), "roll"]);
    let old: BTreeSet<String> = (1..=3).map(|i| format!("v1 web {i}")).collect();
    let new: BTreeSet<String> = (1..=3).map(|i| format!("v2 web {i}")).collect();
    wait_for(
        60,
        "the published port to answer from every replica",
        || (published(&ns.0, busybox, 18081, 12) == old).then_some(()),
    );

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let answers = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Answer>::new()));
    let fast = std::time::Duration::from_millis(20);
    let mut clients = vec![client_loop(
        &ns.0,
        18081,
        "/",
        fast,
        60,
        stop.clone(),
        answers.clone(),
    )];
    for _ in 0..3 {
        let pause = std::time::Duration::from_millis(5);
        clients.push(client_loop(
            &ns.0,
            18081,
            "/cgi-bin/slow",
            pause,
            60,
            stop.clone(),
            answers.clone(),
        ));
    }
    // the clients are under way before the update
    wait_for(10, "the clients' first answers", || {
        (answers.lock().unwrap().len() >= 20).then_some(())
    });
    d.ctl_ok(&[
        "service",
        "update",
        "--env-add",
        "VERSION=2",
        "--update-parallelism",
        "1",
        "--update-order",
        "stop-first",
        "roll_web",
    ]);
    // until the last answers come from the three new replicas only (or the client's 60 s are up)
    let done = || {
        let a = answers.lock().unwrap();
        let recent: BTreeSet<&String> = a
            .iter()
            .rev()
            .take(30)
            .filter_map(|r| r.as_ref().ok())
            .collect();
        recent.len() == 3 && recent.iter().all(|b| new.contains(*b))
    };
    while !done() && !clients[0].is_finished() {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for c in clients {
        c.join().unwrap();
    }
    let answers = answers.lock().unwrap().clone();
    let failed: Vec<(usize, &String)> = answers
        .iter()
        .enumerate()
        .filter_map(|(i, a)| a.as_ref().err().map(|e| (i, e)))
        .collect();
    let bodies: Vec<&String> = answers.iter().filter_map(|a| a.as_ref().ok()).collect();
    eprintln!(
        "{} requests during the update, {} failed",
        answers.len(),
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {:?}",
        failed.len(),
        answers.len(),
        &failed[..failed.len().min(10)]
    );
    assert!(
        old.contains(bodies[0]),
        "the first answers come from the old version: {:?}",
        bodies[0]
    );
    let seen_new: BTreeSet<String> = bodies
        .iter()
        .filter(|b| new.contains(**b))
        .map(|b| b.to_string())
        .collect();
    assert_eq!(seen_new, new, "every new replica answered");
    assert!(
        bodies.iter().all(|b| old.contains(*b) || new.contains(*b)),
        "only the two versions answer"
    );
    assert!(done(), "the update finished within the client's 60 s");
    d.ctl_ok(&["stack", "rm", "roll"]);
    drop(d);
}
