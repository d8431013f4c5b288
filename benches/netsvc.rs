//! Published-port proxy benchmark (`swarm::netsvc`), loopback only: three line-echo backends on 127.0.0.2-4
//! (one port), published through `Services` on 127.0.0.1; the same clients then go straight to the backends
//! (round robin by request) in the same run. For each of: a new connection per request (what `curl` does) and
//! one kept connection per client; 1 and 16 concurrent clients: requests/s, p50 and p99 latency.
//!
//! Then the time `Services::update` takes to follow a change (one task of 1,000 leaving the ready set: the DNS
//! index rebuilt and swapped, 200 published ports' backend sets swapped, VIP rulesets recomputed), median and p99
//! of 50 updates. As root, also the time `vip::apply` takes to replace a task's VIP table in a namespace.
//!
//! Run: `cargo bench --bench netsvc` (`NETSVC_BENCH_REQUESTS` scales the request counts, default 1).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use swarm::model::netmap::{Endpoint, NetworkInfo, NetworkMap, ServiceEndpoint};
use swarm::model::service::{EndpointMode, PortConfig, PortProtocol, PublishMode};
use swarm::netsvc::{Services, ServicesConfig};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

const LINE: &[u8] = b"GET /0123456789abcdef0123456789abcdef0123456789abcdef HTTP/1.1\n";

async fn echo(listener: TcpListener) {
    while let Ok((conn, _)) = listener.accept().await {
        tokio::spawn(async move {
            let _ = conn.set_nodelay(true);
            let (r, mut w) = conn.into_split();
            let mut r = BufReader::new(r);
            let mut line = Vec::new();
            loop {
                line.clear();
                match r.read_until(b'\n', &mut line).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        if w.write_all(&line).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
}

async fn backends() -> Vec<SocketAddr> {
    loop {
        let first = TcpListener::bind("127.0.0.2:0")
            .await
            .expect("bind 127.0.0.2");
        let port = first.local_addr().expect("addr").port();
        let (Ok(b), Ok(c)) = (
            TcpListener::bind(("127.0.0.3", port)).await,
            TcpListener::bind(("127.0.0.4", port)).await,
        ) else {
            continue;
        };
        let addrs = vec![
            first.local_addr().expect("addr"),
            b.local_addr().expect("addr"),
            c.local_addr().expect("addr"),
        ];
        for l in [first, b, c] {
            tokio::spawn(echo(l));
        }
        return addrs;
    }
}

async fn one_request(conn: &mut BufReader<TcpStream>, line: &mut Vec<u8>) -> std::io::Result<()> {
    conn.get_mut().write_all(LINE).await?;
    line.clear();
    conn.read_until(b'\n', line).await?;
    if line.as_slice() != LINE {
        return Err(std::io::Error::other("wrong reply"));
    }
    Ok(())
}

struct Run {
    rps: f64,
    p50: Duration,
    p99: Duration,
    failed: usize,
}

/// `total` requests from `clients` concurrent clients; `targets` taken in turn per new connection.
async fn run(targets: Vec<SocketAddr>, clients: usize, total: usize, keep_alive: bool) -> Run {
    let per_client = total / clients;
    let targets = Arc::new(targets);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let targets = targets.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per_client);
            let mut failed = 0;
            let mut line = Vec::new();
            let mut kept: Option<BufReader<TcpStream>> = None;
            for i in 0..per_client {
                let t0 = Instant::now();
                let ok = async {
                    if !keep_alive || kept.is_none() {
                        let target = targets[(c + i) % targets.len()];
                        let s = TcpStream::connect(target).await?;
                        s.set_nodelay(true)?;
                        kept = Some(BufReader::new(s));
                    }
                    let conn = kept.as_mut().expect("connected");
                    one_request(conn, &mut line).await
                }
                .await;
                if !keep_alive {
                    kept = None;
                }
                match ok {
                    Ok(()) => lat.push(t0.elapsed()),
                    Err(_) => {
                        failed += 1;
                        kept = None;
                    }
                }
            }
            (lat, failed)
        }));
    }
    let mut lat = Vec::new();
    let mut failed = 0;
    for t in tasks {
        let (l, f) = t.await.expect("client");
        lat.extend(l);
        failed += f;
    }
    let elapsed = start.elapsed();
    lat.sort();
    let at = |q: f64| {
        lat.get(((lat.len() as f64 * q) as usize).min(lat.len().saturating_sub(1)))
            .copied()
    };
    Run {
        rps: lat.len() as f64 / elapsed.as_secs_f64(),
        p50: at(0.5).unwrap_or_default(),
        p99: at(0.99).unwrap_or_default(),
        failed,
    }
}

fn endpoint(task: String, svc: &str, addr: String, ready: bool) -> Endpoint {
    Endpoint {
        task_name: format!("{svc}.1.{task}"),
        task_id: task,
        service_id: svc.into(),
        node_id: "node1".into(),
        network_id: "ing".into(),
        address: addr,
        ready,
    }
}

fn service(id: &str, target: u16, published: u16) -> ServiceEndpoint {
    ServiceEndpoint {
        service_id: id.into(),
        name: format!("s_{id}"),
        short_name: Some(id.into()),
        mode: EndpointMode::Vip,
        vips: vec![("ing".into(), "10.255.0.2".into())],
        ports: vec![PortConfig {
            protocol: PortProtocol::Tcp,
            target_port: target,
            published_port: Some(published),
            publish_mode: PublishMode::Ingress,
        }],
        ..Default::default()
    }
}

fn config() -> ServicesConfig {
    ServicesConfig {
        dns_listen: Some(Vec::new()),
        dns_port: 53,
        upstreams: Vec::new(),
        publish_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

async fn proxy_vs_direct(scale: usize) {
    let backends = backends().await;
    let port = free_port();
    let mut map = NetworkMap {
        networks: vec![NetworkInfo {
            id: "ing".into(),
            ingress: true,
            ..Default::default()
        }],
        ..Default::default()
    };
    map.services.push(service("web", backends[0].port(), port));
    for (i, b) in backends.iter().enumerate() {
        map.endpoints
            .push(endpoint(format!("t{i}"), "web", b.ip().to_string(), true).into());
    }
    let mut services = Services::new(config());
    let problems = services.update(&map, "node1").await.problems;
    assert!(problems.is_empty(), "{problems:?}");
    let front = vec![SocketAddr::from(([127, 0, 0, 1], port))];
    println!("| connections | clients | path | requests/s | p50 | p99 | failed |");
    println!("|---|---|---|---|---|---|---|");
    for keep_alive in [false, true] {
        for clients in [1, 16] {
            let total = scale * if keep_alive { 40_000 } else { 4_000 };
            let total = total - total % clients;
            for (path, targets) in [
                ("straight to the tasks", backends.clone()),
                ("through the proxy", front.clone()),
            ] {
                let r = run(targets, clients, total, keep_alive).await;
                println!(
                    "| {} | {clients} | {path} | {:.0} | {} | {} | {} |",
                    if keep_alive {
                        "one kept per client"
                    } else {
                        "new per request"
                    },
                    r.rps,
                    ms(r.p50),
                    ms(r.p99),
                    r.failed
                );
            }
        }
    }
    services.shutdown().await;
}

async fn update_latency() {
    // 200 services × 5 tasks, each service publishing one port
    let mut map = NetworkMap {
        networks: vec![NetworkInfo {
            id: "ing".into(),
            ingress: true,
            ..Default::default()
        }],
        ..Default::default()
    };
    // 200 distinct free ports: all held until every number is taken
    let held: Vec<std::net::TcpListener> = (0..200)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind"))
        .collect();
    let ports: Vec<u16> = held
        .iter()
        .map(|l| l.local_addr().expect("addr").port())
        .collect();
    drop(held);
    for s in 0..200u16 {
        let id = format!("svc{s}");
        let mut svc = service(&id, 80, ports[s as usize]);
        svc.vips = vec![(
            "ing".into(),
            format!("10.255.{}.{}", 100 + s / 200, 2 + s % 200),
        )];
        map.services.push(svc);
        for t in 0..5u16 {
            let n = s * 5 + t;
            let node = if t == 0 { "node1" } else { "node2" };
            let mut e = endpoint(
                format!("{id}t{t}"),
                &id,
                format!("10.255.{}.{}", n / 250, 2 + n % 250),
                true,
            );
            e.node_id = node.into();
            map.endpoints.push(e.into());
        }
    }
    let mut services = Services::new(config());
    let problems = services.update(&map, "node1").await.problems;
    if !problems.is_empty() {
        println!("problems: {problems:?}");
    }
    let mut times = Vec::new();
    for i in 0..50 {
        let e = std::sync::Arc::make_mut(&mut map.endpoints[(i * 37) % 1000]);
        e.ready = !e.ready;
        let t0 = Instant::now();
        let _ = services.update(&map, "node1").await;
        times.push(t0.elapsed());
    }
    times.sort();
    println!(
        "\nServices::update, 1,000 endpoints / 200 services / 200 published ports / 200 local tasks' VIP rulesets, \
         one readiness change: median {}, p99 {} (50 updates)",
        ms(times[25]),
        ms(times[49])
    );
    let pending = services.pending_vips();
    println!(
        "VIP rulesets pending after the last update: {} of 200 local tasks",
        pending.len()
    );
    if nix::unistd::geteuid().is_root() {
        vip_apply_time(pending.values().next().cloned().unwrap_or_default());
        apply_pending_time(&mut services, pending.keys().take(16).cloned().collect()).await;
    }
    services.shutdown().await;
}

/// As root: `Services::apply_pending_vips` for 16 tasks, each in a namespace made here (removed after).
async fn apply_pending_time(services: &mut Services, tasks: Vec<String>) {
    use swarm::netsvc::vip::Netns;
    let names: Vec<String> = (0..tasks.len())
        .map(|i| format!("nsvcb{}x{i}", std::process::id()))
        .collect();
    let mut made = Vec::new();
    for n in &names {
        let ok = std::process::Command::new("ip")
            .args(["netns", "add", n])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if ok {
            made.push(n.clone());
        }
    }
    if made.len() == names.len() {
        let ns_of = |task: &str| {
            tasks
                .iter()
                .position(|t| t == task)
                .map(|i| Netns::Path(format!("/run/netns/{}", names[i]).into()))
        };
        let t0 = Instant::now();
        let problems = services.apply_pending_vips(ns_of).await;
        let took = t0.elapsed();
        println!(
            "Services::apply_pending_vips, {} task namespaces ({} at a time): {} in all, {} per namespace{}",
            tasks.len(),
            swarm::netsvc::VIP_APPLY_PARALLEL,
            ms(took),
            ms(took / tasks.len() as u32),
            if problems.is_empty() { String::new() } else { format!(" ({problems:?})") }
        );
    }
    for n in made {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &n])
            .status();
    }
}

/// As root: `vip::apply` of one task's ruleset into a namespace made here (removed after), 20 times.
fn vip_apply_time(ruleset: String) {
    use swarm::netsvc::vip;
    let name = format!("nsvcbench{}", std::process::id());
    let ok = std::process::Command::new("ip")
        .args(["netns", "add", &name])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        println!("(ip netns add failed: no VIP apply timing)");
        return;
    }
    let ns = vip::Netns::Path(format!("/run/netns/{name}").into());
    let mut times = Vec::new();
    for _ in 0..20 {
        let t0 = Instant::now();
        if let Err(e) = vip::apply(&ns, &ruleset) {
            println!("vip::apply: {e}");
            break;
        }
        times.push(t0.elapsed());
    }
    let _ = std::process::Command::new("ip")
        .args(["netns", "del", &name])
        .status();
    times.sort();
    if !times.is_empty() {
        println!(
            "vip::apply (nft -f - in a task namespace, {} VIPs): median {}, max {} (20 runs)",
            ruleset.matches("ip daddr").count(),
            ms(times[times.len() / 2]),
            ms(times[times.len() - 1])
        );
    }
}

fn main() {
    let scale = std::env::var("NETSVC_BENCH_REQUESTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1usize)
        .max(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        proxy_vs_direct(scale).await;
        update_latency().await;
    });
}
