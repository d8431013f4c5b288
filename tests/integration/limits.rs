//! Limits with a real `swarmd`: a huge scale is refused by `swarmctl`, by the server when a client skips the
//! CLI's check, and the cluster's own (configurable) limit is named and honoured.

use super::cluster::Swarmd;
use swarm::api::control::{control_client::ControlClient, ScaleRequest};

const STACK: &str = "services:\n  web:\n    image: web\n    command: [sleep, '300']\n    stop_grace_period: 1s\n    deploy: {replicas: 1}\n";

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A raw control-API client on the daemon's socket (what a forged or foreign client would send).
fn raw_scale(d: &Swarmd, service: &str, replicas: u64) -> Result<(), tonic::Status> {
    let sock = d.state().join("swarmd.sock");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let channel = swarm::transport::unix_channel(sock).await.expect("connect");
        let mut c = ControlClient::new(channel);
        c.scale_service(ScaleRequest {
            service: service.into(),
            replicas,
        })
        .await
        .map(|_| ())
    })
}

#[test]
fn huge_scales_are_refused_with_the_limit_named_everywhere() {
    let d = Swarmd::start();
    let files = tempfile::tempdir().unwrap();
    let stack = files.path().join("s.yml");
    std::fs::write(&stack, STACK).unwrap();
    d.ctl_ok(&["stack", "deploy", "-c", stack.to_str().unwrap(), "s"]);

    // the CLI refuses a count no cluster allows, before sending anything
    let out = d.ctl(&["service", "scale", "s_web=4000000000"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("replicas 4000000000 is over the limit of 1000000"),
        "{}",
        stderr(&out)
    );

    // a client that skips the CLI gets the server's refusal, naming the cluster's limit and how to raise it
    let status = raw_scale(&d, "s_web", 4_000_000_000).unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains(
            "service s_web: replicas 4000000000 is over the limit of 10000 (the cluster's limit: raise it \
             with `swarmctl swarm update --max-replicas N`, up to 1000000)"
        ),
        "{}",
        status.message()
    );

    // the operator lowers the limit: scale past it refused, within it applied; swarm info shows it
    d.ctl_ok(&["swarm", "update", "--max-replicas", "3"]);
    assert!(d.ctl_ok(&["swarm", "info"]).contains("Max Replicas: 3"));
    let out = d.ctl(&["service", "scale", "s_web=5"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains("replicas 5 is over the limit of 3"),
        "{}",
        stderr(&out)
    );
    d.ctl_ok(&["service", "scale", "s_web=2"]);
    // a stack file past the cluster's limit is refused with its file, line and key, nothing changed
    let big = files.path().join("big.yml");
    std::fs::write(&big, STACK.replace("replicas: 1", "replicas: 4")).unwrap();
    let out = d.ctl(&["stack", "deploy", "-c", big.to_str().unwrap(), "s"]);
    assert_eq!(out.status.code(), Some(2), "invalid input");
    assert!(
        stderr(&out).contains(
            "big.yml:6:24: services.web.deploy.replicas: replicas 4 is over the limit of 3"
        ),
        "{}",
        stderr(&out)
    );
    let svc = d.ctl_ok(&["service", "ls", "--format", "json"]);
    assert!(
        svc.contains("\"Replicas\":\"") && svc.contains("/2"),
        "{svc}"
    );

    // limits have ceilings of their own
    let out = d.ctl(&["swarm", "update", "--max-replicas", "2000000"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains("--max-replicas 2000000 is over the limit of 1000000"),
        "{}",
        stderr(&out)
    );
    d.ctl_ok(&["stack", "rm", "s"]);
}

/// A stack of 2,000 one-replica services converges on one node, and the node never misses a heartbeat on the
/// way (task starts run on the executor's own runtime; orchestrators and scheduler work in bounded rounds).
#[test]
fn two_thousand_services_converge_without_a_missed_heartbeat() {
    const SERVICES: usize = 2000;
    // 2,000 services on the stack's one network need 4,000 addresses (a VIP and a task each): Swarm's /24 holds
    // 253, so the subnets are cut as /20 here, as a user of such a stack would ask at cluster creation. This is
    // the control plane's test: tasks stay on the host's network (as root, per-task networking of 2,000
    // services on one network does not converge in time yet: every task's VIP table holds every VIP; see
    // issue 13's notes)
    let d = Swarmd::start_in(
        tempfile::tempdir().unwrap(),
        &[
            "--default-addr-pool-mask-length",
            "20",
            "--no-task-networks",
        ],
    );
    let files = tempfile::tempdir().unwrap();
    let stack = files.path().join("big.yml");
    let mut text = String::from("services:\n");
    for i in 0..SERVICES {
        text.push_str(&format!(
            "  s{i}:\n    image: x\n    command: [sleep, '600']\n    stop_grace_period: 1s\n"
        ));
    }
    std::fs::write(&stack, text).unwrap();
    d.ctl_ok(&[
        "stack",
        "deploy",
        "--detach",
        "-c",
        stack.to_str().unwrap(),
        "big",
    ]);
    super::cluster::wait_for(600, "2,000 services converged", || {
        let out = d.ctl(&["service", "ls", "--format", "json"]);
        let ready = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains("\"Replicas\":\"1/1\""))
            .count();
        (ready == SERVICES).then_some(())
    });
    let log = d.log();
    assert!(
        !log.contains("missed its heartbeats"),
        "the node missed heartbeats while converging:\n{}",
        log.lines()
            .filter(|l| l.contains("WARN"))
            .take(20)
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(d.task_pids().len(), SERVICES, "one process per service");
    d.ctl_ok(&["stack", "rm", "big"]);
    super::cluster::wait_for(300, "every task process gone", || {
        d.task_pids().is_empty().then_some(())
    });
}
