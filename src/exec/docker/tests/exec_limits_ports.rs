//! Docker executor tests of health checks (docker exec), resource limits and published ports.

use super::*;

fn argv(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn health_checks_run_through_docker_exec() {
    let Some((_d, exec)) = executor().await else {
        return;
    };
    let id = unique("health");
    let mut s = spec(&id, &["sleep", "300"]);
    s.stop_grace_period = Duration::from_secs(1);
    s.env = vec![("MARK".into(), "m1".into())];
    let ctl = exec.controller(s).unwrap();
    ctl.prepare().await.unwrap();
    ctl.start().await.unwrap();
    let t = Duration::from_secs(5);
    let ok = ctl
        .exec_check(&argv(&["sh", "-c", "echo ok $MARK; echo warn >&2"]), t)
        .await
        .unwrap();
    assert!(ok.passed(), "{ok:?}");
    assert_eq!(ok.output(), "ok m1\nwarn\n");
    let bad = ctl
        .exec_check(&argv(&["sh", "-c", "exit 4"]), t)
        .await
        .unwrap();
    assert_eq!(
        bad,
        CheckResult::Exited {
            code: 4,
            output: String::new()
        }
    );
    let missing = ctl.exec_check(&argv(&["nosuchcheck"]), t).await.unwrap();
    assert!(
        matches!(
            missing,
            CheckResult::Exited {
                code: 126 | 127,
                ..
            }
        ),
        "{missing:?}"
    );
    let slow = ctl
        .exec_check(&argv(&["sleep", "5"]), Duration::from_millis(300))
        .await
        .unwrap();
    assert_eq!(
        slow,
        CheckResult::TimedOut {
            timeout: Duration::from_millis(300)
        }
    );
    ctl.terminate().await.unwrap();
    assert!(ctl.exec_check(&argv(&["true"]), t).await.is_err());
    remove(&exec, ctl.as_ref()).await;
}

#[tokio::test]
async fn resource_limits_are_set_on_the_container() {
    let Some((_d, exec)) = executor().await else {
        return;
    };
    let id = unique("limits");
    let mut s = sh(
        &id,
        "cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || echo unknown",
    );
    s.limits = Limits {
        nano_cpus: 500_000_000,
        memory_bytes: 64 << 20,
        pids: 50,
    };
    let (ctl, status) = run(&exec, s).await;
    assert_eq!(status, ExitStatus::exited(0));
    let info = exec
        .client()
        .inspect_container(&container_name(&id), None::<InspectContainerOptions>)
        .await
        .expect("inspect");
    let host = info.host_config.clone().expect("host config");
    assert_eq!(host.nano_cpus, Some(500_000_000));
    assert_eq!(host.memory, Some(64 << 20));
    assert_eq!(host.pids_limit, Some(50));
    // Where the container can see its cgroup (v2, or v1 with a private cgroup namespace), the
    // kernel enforces the same number.
    let seen = stdout_of(&exec, &id).await;
    if seen.trim() != "unknown" {
        assert_eq!(seen.trim(), (64u64 << 20).to_string());
    }
    // An adopted controller reads the limits back from the container.
    let back = container::spec_of(&id, &info).expect("spec of");
    assert_eq!(
        back.limits,
        Limits {
            nano_cpus: 500_000_000,
            memory_bytes: 64 << 20,
            pids: 50
        }
    );
    remove(&exec, ctl.as_ref()).await;

    // No limits: nothing is set (0 in the daemon's answer means unlimited).
    let id = unique("nolimits");
    let (ctl, _) = run(&exec, sh(&id, "true")).await;
    let info = exec
        .client()
        .inspect_container(&container_name(&id), None::<InspectContainerOptions>)
        .await
        .expect("inspect");
    let host = info.host_config.clone().expect("host config");
    assert!(host.nano_cpus.unwrap_or(0) == 0, "{:?}", host.nano_cpus);
    assert!(host.memory.unwrap_or(0) == 0, "{:?}", host.memory);
    assert!(host.pids_limit.unwrap_or(0) <= 0, "{:?}", host.pids_limit);
    assert_eq!(
        container::spec_of(&id, &info).unwrap().limits,
        Limits::default()
    );
    remove(&exec, ctl.as_ref()).await;
}

/// A port nobody listens on right now (tcp and udp).
fn free_port() -> u16 {
    loop {
        let tcp = std::net::TcpListener::bind("0.0.0.0:0").expect("bind");
        let port = tcp.local_addr().unwrap().port();
        if std::net::UdpSocket::bind(("0.0.0.0", port)).is_ok() {
            return port;
        }
    }
}

#[tokio::test]
async fn published_ports_are_bound_on_the_node() {
    use tokio::io::AsyncReadExt;

    let Some((_d, exec)) = executor().await else {
        return;
    };
    let id = unique("ports");
    let fixed = free_port();
    let mesh = free_port();
    let mut s = sh(&id, "echo hello-from-task | busybox nc -l -p 8080");
    s.stop_grace_period = Duration::from_secs(1);
    s.ports = vec![
        PublishedPort {
            target: 8080,
            published: None,
            protocol: PortProtocol::Tcp,
            ingress: false,
        },
        PublishedPort {
            target: 9000,
            published: Some(fixed),
            protocol: PortProtocol::Udp,
            ingress: false,
        },
        PublishedPort {
            target: 9001,
            published: Some(mesh),
            protocol: PortProtocol::Tcp,
            ingress: true,
        },
    ];
    let ctl = exec.controller(s).unwrap();
    ctl.prepare().await.unwrap();
    ctl.start().await.unwrap();
    let info = exec
        .client()
        .inspect_container(&container_name(&id), None::<InspectContainerOptions>)
        .await
        .expect("inspect");
    let exposed = info
        .config
        .as_ref()
        .and_then(|c| c.exposed_ports.clone())
        .unwrap_or_default();
    for key in ["8080/tcp", "9000/udp", "9001/tcp"] {
        assert!(exposed.iter().any(|e| e == key), "{key} in {exposed:?}");
    }
    let bindings = info
        .host_config
        .as_ref()
        .and_then(|h| h.port_bindings.clone())
        .expect("port bindings");
    let host_port =
        |key: &str| -> Option<String> { bindings.get(key)?.as_ref()?.first()?.host_port.clone() };
    assert_eq!(host_port("8080/tcp").as_deref(), Some(""));
    assert_eq!(host_port("9000/udp"), Some(fixed.to_string()));
    assert_eq!(host_port("9001/tcp"), Some(mesh.to_string()));
    let back = container::spec_of(&id, &info).unwrap();
    assert_eq!(back.ports.len(), 3, "{:?}", back.ports);
    assert!(back.ports.contains(&PublishedPort {
        target: 9000,
        published: Some(fixed),
        protocol: PortProtocol::Udp,
        ingress: false,
    }));

    // The daemon picked a port for 8080/tcp; the task answers on it.
    let actual = info
        .network_settings
        .as_ref()
        .and_then(|n| n.ports.as_ref())
        .and_then(|p| p.get("8080/tcp").cloned().flatten())
        .unwrap_or_default();
    let picked: u16 = actual
        .iter()
        .find_map(|b| b.host_port.as_deref()?.parse().ok())
        .unwrap_or_else(|| panic!("no host port for 8080/tcp in {actual:?}"));
    assert_ne!(picked, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = String::new();
    while Instant::now() < deadline {
        if let Ok(mut conn) = tokio::net::TcpStream::connect(("127.0.0.1", picked)).await {
            let mut buf = [0u8; 64];
            let read = tokio::time::timeout(Duration::from_secs(2), conn.read(&mut buf)).await;
            if let Ok(Ok(n)) = read {
                got = String::from_utf8_lossy(&buf[..n]).into_owned();
                if got.contains("hello-from-task") {
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        got.contains("hello-from-task"),
        "read {got:?} from port {picked}"
    );
    ctl.terminate().await.unwrap();
    remove(&exec, ctl.as_ref()).await;
}
