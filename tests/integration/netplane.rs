//! The node's data plane in the kernel (root only; skipped with a note otherwise), in network namespaces this
//! test creates and removes (only addresses inside them carry traffic): two simulated nodes joined by a veth
//! pair, each converged to its network map by `swarmd __netplane`, a task namespace on node A reaches one on
//! node B over the VXLAN overlay (a TCP echo), and a network removed from the map takes its links; a process
//! task of a real `swarmd` (itself in a namespace of the test's, so bridges and NAT never touch the host) gets
//! a namespace of its own with its address and its network's resolver, and its veth goes with it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use swarm::model::netmap::{Endpoint, NetworkInfo, NetworkMap, PeerNode};
use swarm::network::names;

use super::cluster::{bin, wait_for};

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn ip_out(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("run ip");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Network namespaces of this test, deleted (with every link in them) on drop, failure or not.
struct Namespaces(Vec<String>);

impl Namespaces {
    fn create(names: &[String]) -> Option<Namespaces> {
        let mut made = Namespaces(Vec::new());
        for n in names {
            ip(&["netns", "del", n]); // a leftover of a killed run
            if !ip(&["netns", "add", n]) {
                return None;
            }
            made.0.push(n.clone());
            if !ip(&["-n", n, "link", "set", "lo", "up"]) {
                return None;
            }
        }
        Some(made)
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for n in &self.0 {
            ip(&["netns", "del", n]);
        }
    }
}

fn root_with_netns() -> bool {
    if !nix::unistd::geteuid().is_root() || !ip(&["netns", "list"]) {
        eprintln!("the network plane needs root and `ip netns`: skipped");
        return false;
    }
    true
}

/// Runs `f` on a thread inside namespace `ns` (sockets it makes stay there).
fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::scope(|s| {
        s.spawn(|| {
            let file = std::fs::File::open(&path).expect("open the namespace");
            nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .expect("namespace thread")
    })
}

fn overlay(id: &str, subnet: &str, gateway: &str, vni: u32) -> NetworkInfo {
    NetworkInfo {
        id: id.into(),
        name: format!("np_{id}"),
        driver: "overlay".into(),
        subnet: subnet.into(),
        gateway: gateway.into(),
        vni,
        internal: false,
        ingress: false,
    }
}

fn endpoint(task: &str, node: &str, network: &str, address: &str) -> std::sync::Arc<Endpoint> {
    std::sync::Arc::new(Endpoint {
        task_id: task.into(),
        task_name: format!("np_echo.1.{task}"),
        service_id: "echo".into(),
        node_id: node.into(),
        network_id: network.into(),
        address: address.into(),
        ready: true,
    })
}

fn write_map(path: &std::path::Path, map: &NetworkMap) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(map).expect("json")).expect("write map");
    std::fs::rename(&tmp, path).expect("rename map");
}

/// `swarmd __netplane MAP` inside namespace `ns`; panics with its output when it fails.
fn netplane(ns: &str, map: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(bin("swarmd"))
        .arg("__netplane")
        .arg(map)
        .args(args)
        .output()
        .expect("run swarmd __netplane");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "swarmd __netplane in {ns} failed: {text}"
    );
    text
}

/// One TCP round trip from namespace `from` to `to`'s listener, retried (ARP, the bridge's first frames) for
/// at most 20 s.
fn echo_across(from: &str, listener: TcpListener, to: SocketAddr) -> String {
    listener.set_nonblocking(true).expect("nonblocking");
    std::thread::scope(|s| {
        let server = s.spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                match listener.accept() {
                    Ok((mut c, _)) => {
                        c.set_nonblocking(false).expect("blocking");
                        c.set_read_timeout(Some(Duration::from_secs(5)))
                            .expect("timeout");
                        let mut buf = [0u8; 64];
                        let n = c.read(&mut buf).unwrap_or(0);
                        let _ = c.write_all(&buf[..n]);
                        return;
                    }
                    Err(_) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    Err(e) => panic!("no connection reached the listener: {e}"),
                }
            }
        });
        let reply = in_netns(from, || {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                match TcpStream::connect_timeout(&to, Duration::from_secs(2)) {
                    Ok(mut c) => {
                        c.set_read_timeout(Some(Duration::from_secs(5)))
                            .expect("timeout");
                        c.write_all(b"hello over vxlan").expect("send");
                        let mut got = String::new();
                        let _ = c.read_to_string(&mut got);
                        return got;
                    }
                    Err(e) if Instant::now() >= deadline => panic!("cannot connect to {to}: {e}"),
                    Err(_) => std::thread::sleep(Duration::from_millis(200)),
                }
            }
        });
        server.join().expect("server");
        reply
    })
}

#[test]
fn a_task_on_node_a_reaches_one_on_node_b_over_vxlan_and_a_removed_network_takes_its_links() {
    if !root_with_netns() {
        return;
    }
    let p = format!("swnp{}", std::process::id() % 100_000);
    let [node_a, node_b, task_a, task_b] = ["a", "b", "ta", "tb"].map(|s| format!("{p}{s}"));
    let Some(_ns) = Namespaces::create(&[
        node_a.clone(),
        node_b.clone(),
        task_a.clone(),
        task_b.clone(),
    ]) else {
        eprintln!("cannot create network namespaces here: skipped");
        return;
    };
    // the underlay: a veth pair between the two node namespaces
    let (ua, ub) = (format!("{p}ua"), format!("{p}ub"));
    assert!(ip(&[
        "link", "add", &ua, "netns", &node_a, "type", "veth", "peer", "name", &ub, "netns", &node_b
    ]));
    for (ns, link, addr) in [
        (&node_a, &ua, "192.168.77.2/24"),
        (&node_b, &ub, "192.168.77.3/24"),
    ] {
        assert!(ip(&["-n", ns, "addr", "add", addr, "dev", link]));
        assert!(ip(&["-n", ns, "link", "set", link, "up"]));
    }

    // both nodes filter like a Docker host: forwarding dropped but for Docker's DOCKER-USER chain (bridged
    // frames go through it too, br_netfilter)
    for ns in [&node_a, &node_b] {
        let mut nft = Command::new("ip")
            .args(["netns", "exec", ns, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .expect("nft");
        nft.stdin
            .take()
            .expect("stdin")
            .write_all(DOCKER_LIKE.as_bytes())
            .expect("write");
        assert!(nft.wait().expect("nft").success());
    }

    let net = overlay("npnet1", "10.77.1.0/24", "10.77.1.1", 4242);
    let endpoints = vec![
        endpoint("ta", "A", "npnet1", "10.77.1.2"),
        endpoint("tb", "B", "npnet1", "10.77.1.3"),
    ];
    let map_for = |peer: (&str, &str)| NetworkMap {
        networks: vec![net.clone()],
        peers: vec![PeerNode {
            node_id: peer.0.into(),
            addr: peer.1.into(),
            networks: vec!["npnet1".into()],
        }],
        endpoints: endpoints.clone(),
        services: vec![],
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let (map_a, map_b) = (dir.path().join("a.json"), dir.path().join("b.json"));
    write_map(&map_a, &map_for(("B", "192.168.77.3")));
    write_map(&map_b, &map_for(("A", "192.168.77.2")));
    let out_a = netplane(
        &node_a,
        &map_a,
        &[
            "--underlay",
            "192.168.77.2",
            "--task",
            &format!("ta=/run/netns/{task_a}"),
        ],
    );
    assert!(
        out_a.contains("plumbed task ta: eth0 10.77.1.2/24"),
        "{out_a}"
    );
    netplane(
        &node_b,
        &map_b,
        &[
            "--underlay",
            "192.168.77.3",
            "--task",
            &format!("tb=/run/netns/{task_b}"),
        ],
    );

    // what node A holds: the bridge with the gateway, the VXLAN device on it, the flooding entry to B
    let (bridge, vxlan) = (names::bridge_name("npnet1"), names::vxlan_name("npnet1"));
    let vx = ip_out(&["-n", &node_a, "-d", "link", "show", &vxlan]);
    assert!(vx.contains(&format!("master {bridge}")), "{vx}");
    assert!(vx.contains("vxlan id 4242 local 192.168.77.2"), "{vx}");
    assert!(
        vx.contains("dstport 4789") && vx.contains("nolearning"),
        "{vx}"
    );
    let br = ip_out(&["-n", &node_a, "addr", "show", &bridge]);
    assert!(br.contains("inet 10.77.1.1/24"), "{br}");
    let fdb = Command::new("bridge")
        .args(["-n", &node_a, "fdb", "show", "dev", &vxlan])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    assert!(fdb.contains("00:00:00:00:00:00 dst 192.168.77.3"), "{fdb}");
    assert!(fdb.contains("02:42:0a:4d:01:03 dst 192.168.77.3"), "{fdb}");
    // the task's side: its address on eth0 with the derived MAC, the default route via the gateway
    let inside = ip_out(&["-n", &task_a, "addr", "show", "eth0"]);
    assert!(
        inside.contains("inet 10.77.1.2/24") && inside.contains("02:42:0a:4d:01:02"),
        "{inside}"
    );
    assert!(ip_out(&["-n", &task_a, "route"]).contains("default via 10.77.1.1 dev eth0"));
    // outbound NAT for the subnet, not for traffic staying on the bridge
    let nft = ip_out(&[
        "netns",
        "exec",
        &node_a,
        "nft",
        "list",
        "table",
        "ip",
        "swarm_nat",
    ]);
    assert!(
        nft.contains(&format!(
            "ip saddr 10.77.1.0/24 oifname != \"{bridge}\" masquerade"
        )),
        "{nft}"
    );
    // converging again changes nothing
    let again = netplane(&node_a, &map_a, &["--underlay", "192.168.77.2"]);
    assert!(again.starts_with("converged: 0 changes"), "{again}");

    // a TCP round trip from task A's namespace to task B's, across the overlay
    let listener = in_netns(&task_b, || {
        TcpListener::bind("10.77.1.3:7777").expect("listen in task B")
    });
    let reply = echo_across(&task_a, listener, "10.77.1.3:7777".parse().unwrap());
    assert_eq!(reply, "hello over vxlan");

    // the network leaves node A's map: its bridge, VXLAN device, the task's veth and the NAT table go
    write_map(&map_a, &NetworkMap::default());
    netplane(&node_a, &map_a, &["--underlay", "192.168.77.2"]);
    let links = ip_out(&["-n", &node_a, "-o", "link"]);
    assert!(
        !links.contains("swbr-") && !links.contains("swvx-") && !links.contains("swv"),
        "{links}"
    );
    assert!(
        links.contains(&ua),
        "the underlay link is not ours and stays: {links}"
    );
    assert!(!ip_out(&["-n", &task_a, "-o", "link"]).contains("eth0"));
    assert!(!ip(&[
        "netns",
        "exec",
        &node_a,
        "nft",
        "list",
        "table",
        "ip",
        "swarm_nat"
    ]));
}

/// Docker's filtering, as a Docker host has it in nftables.
const DOCKER_LIKE: &str = "table ip filter {
\tchain DOCKER-USER {
\t}
\tchain FORWARD {
\t\ttype filter hook forward priority filter; policy drop;
\t\tjump DOCKER-USER
\t}
}
";

/// A `swarmd` in namespace `ns` on its loopback, fed network maps from a file; killed with everything it
/// started on drop.
struct NsSwarmd {
    dir: tempfile::TempDir,
    child: Child,
}

impl NsSwarmd {
    fn start(ns: &str, map: &std::path::Path) -> NsSwarmd {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = std::fs::File::create(dir.path().with_extension("log")).expect("log");
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(bin("swarmd"))
            .arg("--state-dir")
            .arg(dir.path())
            .args([
                "--listen-addr",
                "127.0.0.1:4242",
                "--heartbeat-period",
                "1s",
                "--hostname",
                "npnode",
            ])
            .env("SWARMD_NETWORK_MAP_FILE", map)
            .env("SWARMD_LOG", "info,openraft=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start swarmd");
        let d = NsSwarmd { dir, child };
        wait_for(60, "swarmd ready", || {
            let out = d.ctl(&["node", "ls"]);
            (out.status.success() && String::from_utf8_lossy(&out.stdout).contains("Ready"))
                .then_some(())
        });
        d
    }

    fn ctl(&self, args: &[&str]) -> std::process::Output {
        Command::new(bin("swarmctl"))
            .env(
                "SWARM_HOST",
                format!("unix://{}/swarmd.sock", self.dir.path().display()),
            )
            .args(args)
            .output()
            .expect("run swarmctl")
    }

    fn ctl_ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(
            out.status.success(),
            "swarmctl {args:?} failed: {}{}\n--- swarmd log ---\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().with_extension("log")).unwrap_or_default()
    }
}

impl Drop for NsSwarmd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // the shims and tasks it started name its state dir in their command line or environment
        let marker = self.dir.path().to_string_lossy().into_owned();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let read =
                |what: &str| std::fs::read(format!("/proc/{pid}/{what}")).unwrap_or_default();
            let ours = [read("cmdline"), read("environ")]
                .iter()
                .any(|b| String::from_utf8_lossy(b).contains(&marker));
            if ours {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        let _ = std::fs::remove_file(self.dir.path().with_extension("log"));
    }
}

const PROBE: &str = r#"
services:
  probe:
    image: debian:bookworm-slim
    command: ["sh", "-c", "cat /proc/net/fib_trie; cat /etc/resolv.conf; echo probe-done; sleep 300"]
    stop_grace_period: 1s
    deploy:
      placement:
        constraints: ["node.labels.netplane == go"]
      restart_policy: {condition: none}
"#;

#[test]
fn a_process_task_of_swarmd_gets_its_own_namespace_address_and_resolver() {
    if !root_with_netns() {
        return;
    }
    let node = format!("swnp{}n", std::process::id() % 100_000);
    let Some(_ns) = Namespaces::create(std::slice::from_ref(&node)) else {
        eprintln!("cannot create network namespaces here: skipped");
        return;
    };
    let files = tempfile::tempdir().expect("tempdir");
    let map_file = files.path().join("map.json");
    let d = NsSwarmd::start(&node, &map_file);
    let stack = files.path().join("probe.yml");
    std::fs::write(&stack, PROBE).expect("stack");
    d.ctl_ok(&[
        "stack",
        "deploy",
        "-c",
        stack.to_str().expect("path"),
        "--detach",
        "np",
    ]);
    // the task exists (no node satisfies its constraint yet): its id goes into the map before it starts
    let task_id = wait_for(60, "the probe's task", || {
        d.ctl_ok(&["service", "ps", "np_probe", "--format", "json"])
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find_map(|v| v["ID"].as_str().map(str::to_string))
    });
    let map = NetworkMap {
        networks: vec![overlay("npnet2", "10.78.0.0/24", "10.78.0.1", 4300)],
        peers: vec![],
        endpoints: vec![endpoint(&task_id, "npnode", "npnet2", "10.78.0.5")],
        services: vec![],
    };
    write_map(&map_file, &map);
    let bridge = names::bridge_name("npnet2");
    wait_for(30, "the map's bridge in the node", || {
        ip_out(&["-n", &node, "addr", "show", &bridge])
            .contains("inet 10.78.0.1/24")
            .then_some(())
    });
    d.ctl_ok(&["node", "update", "--label-add", "netplane=go", "npnode"]);

    let logs = wait_for(60, "the probe's output", || {
        let logs = d.ctl_ok(&["service", "logs", "np_probe"]);
        logs.contains("probe-done").then_some(logs)
    });
    // its own namespace: its address is local there, the host's loopback route table is not all it sees
    assert!(
        logs.contains("10.78.0.5"),
        "the task sees its address:\n{logs}\n{}",
        d.log()
    );
    assert!(
        logs.contains("nameserver 10.78.0.1"),
        "the resolver is its gateway:\n{logs}"
    );
    let veth = names::veth_name(&task_id, "npnet2");
    let host_links = ip_out(&["-n", &node, "-o", "link", "show", "master", &bridge]);
    assert!(
        host_links.contains(&veth),
        "the task's veth is on the bridge: {host_links}"
    );

    // the task removed: its veth goes; the network stays while the map has it
    d.ctl_ok(&["stack", "rm", "np"]);
    wait_for(60, "the task's veth gone", || {
        (!ip_out(&["-n", &node, "-o", "link"]).contains(&veth)).then_some(())
    });
    assert!(ip_out(&["-n", &node, "-o", "link"]).contains(&bridge));
    // the network leaves the map: the node's bridge, VXLAN device and NAT table go
    write_map(&map_file, &NetworkMap::default());
    wait_for(30, "the network's links gone", || {
        let links = ip_out(&["-n", &node, "-o", "link"]);
        (!links.contains("swbr-") && !links.contains("swvx-")).then_some(())
    });
    assert!(!ip(&[
        "netns",
        "exec",
        &node,
        "nft",
        "list",
        "table",
        "ip",
        "swarm_nat"
    ]));
}
