//! Both runtimes on one node (issue 11), as root: a real `swarmd --executor process,docker` in a network
//! namespace the test creates; a stack whose `web` runs as a Docker container (deploy label
//! `com.swarm.executor: docker`, image `swarm-test/busybox:latest`) and whose `proc` runs as a process task,
//! both HTTP servers on the stack's network: the process task reaches the container by service name and the
//! container reaches the process task by service name. Skipped (with a line saying so) without root, `ip`,
//! `nsenter`, `nft`, busybox, a reachable Docker daemon or the test image — unless `SWARM_REQUIRE_DOCKER=1`,
//! which makes a missing daemon or image a failure.

use std::process::{Command, Stdio};

use super::cluster::{wait_for, Swarmd};
use super::netlab::{pid_of, service_net_tools, wget_in_task, Ns};

const IMAGE: &str = "swarm-test/busybox:latest";

fn docker_ok(args: &[&str]) -> bool {
    Command::new("docker")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether Docker and the test image are there; a missing one fails the test under `SWARM_REQUIRE_DOCKER=1`.
fn docker_ready() -> bool {
    let required = std::env::var("SWARM_REQUIRE_DOCKER").is_ok_and(|v| v == "1");
    let problem = if !docker_ok(&["info"]) {
        Some("the Docker daemon is not reachable".to_string())
    } else if !docker_ok(&["image", "inspect", IMAGE]) {
        Some(format!(
            "the image {IMAGE} is missing (the docker executor's unit tests build it: cargo test --lib exec::docker)"
        ))
    } else {
        None
    };
    match problem {
        None => true,
        Some(p) if required => panic!("SWARM_REQUIRE_DOCKER=1 but {p}"),
        Some(p) => {
            eprintln!("skipped: {p}");
            false
        }
    }
}

/// The containers of stack `stack`, removed on drop whatever happens (swarmd's own cleanup is `stack rm`).
struct Containers(String);

impl Containers {
    fn ids(&self, service: Option<&str>) -> Vec<String> {
        let filter = match service {
            Some(s) => format!("label=com.docker.swarm.service.name={}_{s}", self.0),
            None => format!("label=com.docker.stack.namespace={}", self.0),
        };
        let out = Command::new("docker")
            .args(["ps", "-aq", "--filter", &filter])
            .output();
        out.map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
    }
}

impl Drop for Containers {
    fn drop(&mut self) {
        for id in self.ids(None) {
            docker_ok(&["rm", "-f", &id]);
        }
    }
}

#[test]
fn a_container_and_a_process_task_reach_each_other_by_name() {
    let Some(busybox) = service_net_tools() else {
        return;
    };
    if !docker_ready() {
        return;
    }
    let Some(ns) = Ns::create(format!("swdk{}", std::process::id() % 100_000)) else {
        eprintln!("skipped: cannot create a network namespace");
        return;
    };
    let stack = format!("dk{}", std::process::id() % 100_000);
    let containers = Containers(stack.clone());
    let d = Swarmd::start_founder_in_with(
        ns.0.clone(),
        "127.0.0.1".into(),
        4242,
        &["--executor", "process,docker"],
    );
    let marker = format!("sleep {}", 7_200_000 + std::process::id());
    let files = tempfile::tempdir().unwrap();
    let file = files.path().join("mixed.yml");
    std::fs::write(
        &file,
        format!(
            r#"services:
  web:
    image: {IMAGE}
    command: [sh, -c, "busybox mkdir -p /srv && echo from docker > /srv/index.html && exec busybox httpd -f -p 8080 -h /srv"]
    deploy:
      labels:
        com.swarm.executor: docker
    stop_grace_period: 1s
  proc:
    image: x
    command: [sh, -c, "d=$$(mktemp -d) && echo from process > $$d/index.html && {busybox} httpd -p 8080 -h $$d && exec {marker}"]
    stop_grace_period: 1s
"#
        ),
    )
    .unwrap();
    d.ctl_ok(&["stack", "deploy", "-c", file.to_str().unwrap(), &stack]);
    let proc_task = wait_for(60, "the process task", || pid_of(&marker));
    let web = wait_for(60, "web's container", || {
        containers.ids(Some("web")).into_iter().next()
    });

    // the process task → the container, by name (through web's VIP)
    let body = wait_for(30, "web by name from the process task", || {
        wget_in_task(proc_task, busybox, "http://web:8080/")
    });
    assert_eq!(body, "from docker");
    // the container → the process task, by name (its resolver is the same node's)
    let body = wait_for(30, "proc by name from the container", || {
        let out = Command::new("docker")
            .args([
                "exec", &web, "busybox", "timeout", "5", "busybox", "wget", "-q", "-O", "-",
            ])
            .arg("http://proc:8080/")
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    });
    assert_eq!(body, "from process");
    // the runtimes really are two: web is a container, proc is not
    assert!(
        containers.ids(Some("proc")).is_empty(),
        "proc runs as a process"
    );

    d.ctl_ok(&["stack", "rm", &stack]);
    wait_for(60, "web's container removed by stack rm", || {
        containers.ids(None).is_empty().then_some(())
    });
    drop(d);
}
