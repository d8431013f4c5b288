//! Service networking on a node (`swarm::netsvc`) driven by a `NetworkMap` as the node receives it: the
//! published-port proxy over real loopback backends (round robin, a backend leaving the ready set gets no new
//! connection while its open one finishes, zero failed requests while the set changes under a bounded client
//! loop), the resolver answering real UDP and TCP queries per asker, and — as root — VIP rules applied in
//! network namespaces this test creates, balancing connections to listeners with the client's address kept.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use swarm::model::netmap::{Endpoint, NetworkInfo, NetworkMap, ServiceEndpoint};
use swarm::model::service::{EndpointMode, PortConfig, PortProtocol, PublishMode};
use swarm::netsvc::{Services, ServicesConfig};

fn endpoint(task: &str, svc: &str, net: &str, addr: &str, ready: bool) -> std::sync::Arc<Endpoint> {
    std::sync::Arc::new(Endpoint {
        task_id: task.into(),
        task_name: format!("{svc}.1.{task}"),
        service_id: svc.into(),
        node_id: "node1".into(),
        network_id: net.into(),
        address: addr.into(),
        ready,
    })
}

fn service(id: &str, short: &str, mode: EndpointMode, vips: &[(&str, &str)]) -> ServiceEndpoint {
    ServiceEndpoint {
        service_id: id.into(),
        name: id.into(),
        short_name: Some(short.into()),
        mode,
        vips: vips
            .iter()
            .map(|(n, a)| (n.to_string(), a.to_string()))
            .collect(),
        ..Default::default()
    }
}

fn config(dns: Vec<SocketAddr>, upstreams: Vec<SocketAddr>) -> ServicesConfig {
    ServicesConfig {
        dns_listen: Some(dns),
        dns_port: 53,
        upstreams,
        publish_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
    }
}

/// A TCP server on `ip:port` answering each line with `NAME LINE`; counts the connections it accepted.
struct Echo {
    name: String,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    addr: SocketAddr,
}

impl Echo {
    fn start(name: &str, listener: TcpListener) -> Echo {
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, s, n) = (accepted.clone(), stop.clone(), name.to_string());
        std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        a.fetch_add(1, Ordering::SeqCst);
                        let n = n.clone();
                        std::thread::spawn(move || serve_lines(&n, conn));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Echo {
            name: name.into(),
            accepted,
            stop,
            addr,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn serve_lines(name: &str, conn: TcpStream) {
    conn.set_nonblocking(false).unwrap();
    let mut w = conn.try_clone().unwrap();
    for line in BufReader::new(conn).lines() {
        let Ok(line) = line else { return };
        if writeln!(w, "{name} {line}").is_err() {
            return;
        }
    }
}

/// One request on a new connection: the name of the backend that answered.
fn request(addr: SocketAddr, i: usize) -> Result<String, String> {
    let mut c =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    writeln!(c, "req{i}").map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(c)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    let (name, echoed) = line
        .trim_end()
        .split_once(' ')
        .ok_or(format!("reply {line:?}"))?;
    if echoed != format!("req{i}") {
        return Err(format!("reply {line:?} to req{i}"));
    }
    Ok(name.to_string())
}

/// Three listeners on 127.0.0.2, .3, .4, all on one port (the service's target port).
fn three_backends() -> Vec<Echo> {
    for _ in 0..20 {
        let first = TcpListener::bind("127.0.0.2:0").unwrap();
        let port = first.local_addr().unwrap().port();
        let (Ok(b), Ok(c)) = (
            TcpListener::bind(("127.0.0.3", port)),
            TcpListener::bind(("127.0.0.4", port)),
        ) else {
            continue;
        };
        return vec![
            Echo::start("b2", first),
            Echo::start("b3", b),
            Echo::start("b4", c),
        ];
    }
    panic!("no port free on 127.0.0.2-4");
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn web_map(backends: &[&Echo], published: u16) -> NetworkMap {
    let mut web = service("s_web", "web", EndpointMode::Vip, &[]);
    web.ports = vec![PortConfig {
        protocol: PortProtocol::Tcp,
        target_port: backends[0].addr.port(),
        published_port: Some(published),
        publish_mode: PublishMode::Ingress,
    }];
    NetworkMap {
        networks: vec![NetworkInfo {
            id: "ing".into(),
            name: "ingress".into(),
            ingress: true,
            ..Default::default()
        }],
        endpoints: backends
            .iter()
            .map(|b| endpoint(&b.name, "s_web", "ing", &b.addr.ip().to_string(), true))
            .collect(),
        services: vec![web],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_port_round_robins_and_a_backend_leaving_the_set_gets_no_new_connection() {
    let backends = three_backends();
    let port = free_port();
    let front = SocketAddr::from(([127, 0, 0, 1], port));
    let mut services = Services::new(config(vec![], vec![]));
    let mut map = web_map(&backends.iter().collect::<Vec<_>>(), port);
    let update = services.update(&map, "node1").await;
    assert!(update.problems.is_empty(), "{:?}", update.problems);

    // 30 new connections: 10 to each backend, every answer right
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..30 {
        let name = tokio::task::spawn_blocking(move || request(front, i))
            .await
            .unwrap()
            .unwrap();
        *seen.entry(name).or_default() += 1;
    }
    assert_eq!(
        seen,
        BTreeMap::from([("b2".into(), 10), ("b3".into(), 10), ("b4".into(), 10)])
    );

    // a connection open to b3 while b3 leaves the ready set (an update is about to stop it)
    let mut held = None;
    for _ in 0..3 {
        let c = TcpStream::connect(front).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut w = c.try_clone().unwrap();
        let mut r = BufReader::new(c);
        writeln!(w, "hello").unwrap();
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        if line == "b3 hello\n" {
            held = Some((w, r));
            break;
        }
    }
    let (mut w, mut r) = held.expect("one of three connections in turn reaches b3");
    let b3 = map
        .endpoints
        .iter_mut()
        .find(|e| e.task_id == "b3")
        .unwrap();
    Arc::make_mut(b3).ready = false;
    let b3_before = backends[1].accepted();
    assert!(services.update(&map, "node1").await.problems.is_empty());
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..20 {
        let name = tokio::task::spawn_blocking(move || request(front, i))
            .await
            .unwrap()
            .unwrap();
        *seen.entry(name).or_default() += 1;
    }
    assert_eq!(seen, BTreeMap::from([("b2".into(), 10), ("b4".into(), 10)]));
    assert_eq!(
        backends[1].accepted(),
        b3_before,
        "b3 got a connection after it left the set"
    );
    // the connection made before still works to its end
    writeln!(w, "still there").unwrap();
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert_eq!(line, "b3 still there\n");
    drop((w, r));

    // the port unpublished: nothing listens any more
    map.services[0].ports.clear();
    assert!(services.update(&map, "node1").await.problems.is_empty());
    assert!(services.proxy().ports().is_empty());
    assert!(
        TcpStream::connect(front).is_err(),
        "port {port} still open after it was unpublished"
    );
    services.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_fails_while_the_backend_set_changes_under_load() {
    let backends = three_backends();
    let port = free_port();
    let front = SocketAddr::from(([127, 0, 0, 1], port));
    let mut services = Services::new(config(vec![], vec![]));
    let all: Vec<&Echo> = backends.iter().collect();
    // start with b2 alone, as a rolling update would: b3 comes up, b2 goes not ready, then b4, then b3 leaves
    let steps: Vec<Vec<&Echo>> = vec![
        vec![all[0]],
        vec![all[0], all[1]],
        vec![all[1]],
        vec![all[1], all[2]],
        vec![all[2]],
    ];
    let mut map = web_map(&all, port);
    let failures = Arc::new(Mutex::new(Vec::new()));
    let done = Arc::new(AtomicUsize::new(0));
    let set = |map: &mut NetworkMap, ready: &[&Echo]| {
        for e in &mut map.endpoints {
            let e = Arc::make_mut(e);
            e.ready = ready.iter().any(|b| b.name == e.task_id);
        }
    };
    set(&mut map, &steps[0]);
    assert!(services.update(&map, "node1").await.problems.is_empty());
    let (f, d) = (failures.clone(), done.clone());
    let client = std::thread::spawn(move || {
        for i in 0..400 {
            if let Err(e) = request(front, i) {
                f.lock().unwrap().push(format!("request {i}: {e}"));
            }
            d.fetch_add(1, Ordering::SeqCst);
        }
    });
    for (n, step) in steps.iter().enumerate().skip(1) {
        while done.load(Ordering::SeqCst) < n * 80 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        set(&mut map, step);
        assert!(services.update(&map, "node1").await.problems.is_empty());
        // a backend that left the set then gets its stop signal (after the map that removed it was applied:
        // a connection the proxy handed it just before the swap has been accepted by then); its listener
        // closes, open connections finish
        tokio::time::sleep(Duration::from_millis(100)).await;
        for gone in steps[n - 1]
            .iter()
            .filter(|b| !step.iter().any(|s| s.name == b.name))
        {
            gone.stop.store(true, Ordering::SeqCst);
        }
    }
    tokio::task::spawn_blocking(move || client.join().unwrap())
        .await
        .unwrap();
    assert_eq!(*failures.lock().unwrap(), Vec::<String>::new());
    // the last set is b4 alone: the requests after the last swap all went there
    let b4 = backends[2].accepted();
    assert!(b4 >= 1, "b4 never got a request");
    services.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_udp_port_relays_datagrams_both_ways() {
    let backend = tokio::net::UdpSocket::bind("127.0.0.2:0").await.unwrap();
    let target = backend.local_addr().unwrap();
    let echo = tokio::spawn(async move {
        let mut buf = vec![0u8; 1500];
        while let Ok((n, peer)) = backend.recv_from(&mut buf).await {
            let mut reply = b"b2 ".to_vec();
            reply.extend_from_slice(&buf[..n]);
            let _ = backend.send_to(&reply, peer).await;
        }
    });
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut web = service("s_dns", "dns", EndpointMode::Vip, &[]);
    web.ports = vec![PortConfig {
        protocol: PortProtocol::Udp,
        target_port: target.port(),
        published_port: Some(port),
        publish_mode: PublishMode::Host,
    }];
    let map = NetworkMap {
        endpoints: vec![endpoint("u1", "s_dns", "front", "127.0.0.2", true)],
        services: vec![web],
        ..Default::default()
    };
    let mut services = Services::new(config(vec![], vec![]));
    assert!(services.update(&map, "node1").await.problems.is_empty());
    let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    client.connect(("127.0.0.1", port)).await.unwrap();
    for i in 0..5 {
        client.send(format!("ping{i}").as_bytes()).await.unwrap();
        let mut buf = vec![0u8; 1500];
        let n = tokio::time::timeout(Duration::from_secs(5), client.recv(&mut buf))
            .await
            .expect("a reply within 5 s")
            .unwrap();
        assert_eq!(&buf[..n], format!("b2 ping{i}").as_bytes());
    }
    services.shutdown().await;
    echo.abort();
}

#[cfg(feature = "dns")]
mod dns {
    use super::*;
    use swarm::netsvc::index::Lookup;

    use hickory_server::proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
    use hickory_server::proto::rr::rdata::A;
    use hickory_server::proto::rr::{Name, RData, Record, RecordType};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::UdpSocket;

    fn query(name: &str, id: u16) -> Vec<u8> {
        let mut m = Message::new(id, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
        m.to_vec().unwrap()
    }

    /// (response code, A addresses, TTLs) of a reply.
    fn answers(bytes: &[u8]) -> (ResponseCode, Vec<Ipv4Addr>, Vec<u32>) {
        let m = Message::from_vec(bytes).unwrap();
        let mut addrs = Vec::new();
        let mut ttls = Vec::new();
        for r in &m.answers {
            if let RData::A(A(a)) = r.data {
                addrs.push(a);
                ttls.push(r.ttl);
            }
        }
        (m.metadata.response_code, addrs, ttls)
    }

    async fn ask_udp(
        from: &str,
        server: SocketAddr,
        name: &str,
    ) -> (ResponseCode, Vec<Ipv4Addr>, Vec<u32>) {
        let sock = UdpSocket::bind((from, 0)).await.unwrap();
        sock.send_to(&query(name, 0x5157), server).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut buf))
            .await
            .expect("the resolver answers within 5 s")
            .unwrap();
        answers(&buf[..n])
    }

    async fn ask_tcp(
        from: &str,
        server: SocketAddr,
        name: &str,
    ) -> (ResponseCode, Vec<Ipv4Addr>, Vec<u32>) {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind(SocketAddr::new(from.parse().unwrap(), 0))
            .unwrap();
        let mut s = sock.connect(server).await.unwrap();
        let q = query(name, 0x7cb1);
        s.write_all(&(q.len() as u16).to_be_bytes()).await.unwrap();
        s.write_all(&q).await.unwrap();
        let n = s.read_u16().await.unwrap() as usize;
        let mut buf = vec![0u8; n];
        s.read_exact(&mut buf).await.unwrap();
        answers(&buf)
    }

    /// A stand-in for the host's resolver on loopback: answers every A query with 192.0.2.7.
    async fn fake_upstream() -> (SocketAddr, tokio::task::JoinHandle<()>) {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok((n, peer)) = sock.recv_from(&mut buf).await {
                let Ok(q) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let mut r = Message::new(q.metadata.id, MessageType::Response, OpCode::Query);
                r.metadata.recursion_available = true;
                for query in &q.queries {
                    r.add_query(query.clone());
                    r.add_answer(Record::from_rdata(
                        query.name().clone(),
                        300,
                        RData::A(A::new(192, 0, 2, 7)),
                    ));
                }
                let _ = sock.send_to(&r.to_vec().unwrap(), peer).await;
            }
        });
        (addr, task)
    }

    fn free_udp_port(ip: &str) -> u16 {
        std::net::UdpSocket::bind((ip, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_resolver_answers_each_task_on_its_networks_and_forwards_other_names() {
        let (upstream, upstream_task) = fake_upstream().await;
        let server = SocketAddr::from(([127, 0, 0, 1], free_udp_port("127.0.0.1")));
        let mut services = Services::new(config(vec![server], vec![upstream]));
        // the asking task's address is 127.0.0.5 (a loopback stand-in for its address on `front`)
        let mut map = NetworkMap {
            endpoints: vec![
                endpoint("c1", "s_client", "front", "127.0.0.5", true),
                endpoint("w1", "s_web", "front", "10.0.1.11", true),
                endpoint("w2", "s_web", "front", "10.0.1.12", true),
                endpoint("w3", "s_web", "front", "10.0.1.13", false),
                endpoint("x1", "o_secret", "back", "10.0.2.11", true),
            ],
            services: vec![
                service(
                    "s_client",
                    "client",
                    EndpointMode::Vip,
                    &[("front", "10.0.1.3")],
                ),
                service("s_web", "web", EndpointMode::Vip, &[("front", "10.0.1.2")]),
                service("o_secret", "secret", EndpointMode::Dnsrr, &[]),
            ],
            ..Default::default()
        };
        assert!(services.update(&map, "node1").await.problems.is_empty());
        let me = "127.0.0.5";
        let ok = ResponseCode::NoError;
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert_eq!(
            ask_udp(me, server, "web.").await,
            (ok, vec![ip("10.0.1.2")], vec![0])
        );
        assert_eq!(
            ask_udp(me, server, "s_web.").await,
            (ok, vec![ip("10.0.1.2")], vec![0])
        );
        assert_eq!(
            ask_tcp(me, server, "web.").await,
            (ok, vec![ip("10.0.1.2")], vec![0])
        );
        let (code, mut tasks, _) = ask_udp(me, server, "tasks.web.").await;
        tasks.sort();
        assert_eq!((code, tasks), (ok, vec![ip("10.0.1.11"), ip("10.0.1.12")]));
        assert_eq!(
            ask_udp(me, server, "s_web.1.w2.").await,
            (ok, vec![ip("10.0.1.12")], vec![0])
        );
        // not on a network the client shares, unknown, and asked by an address that is no task: NXDOMAIN
        assert_eq!(
            ask_udp(me, server, "o_secret.").await.0,
            ResponseCode::NXDomain
        );
        assert_eq!(
            ask_udp(me, server, "nosuch.").await.0,
            ResponseCode::NXDomain
        );
        assert_eq!(
            ask_udp("127.0.0.6", server, "web.").await.0,
            ResponseCode::NXDomain
        );
        // a name outside the cluster comes from the host's resolver
        assert_eq!(
            ask_udp(me, server, "example.com.").await,
            (ok, vec![ip("192.0.2.7")], vec![300])
        );

        // w1 stops being ready and w3 becomes ready: the very next answer follows
        for e in &mut map.endpoints {
            let e = Arc::make_mut(e);
            match e.task_id.as_str() {
                "w1" => e.ready = false,
                "w3" => e.ready = true,
                _ => {}
            }
        }
        assert!(services.update(&map, "node1").await.problems.is_empty());
        let (_, mut tasks, _) = ask_tcp(me, server, "tasks.web.").await;
        tasks.sort();
        assert_eq!(tasks, vec![ip("10.0.1.12"), ip("10.0.1.13")]);
        assert_eq!(
            ask_udp(me, server, "s_web.1.w1.").await.0,
            ResponseCode::NXDomain
        );
        assert_eq!(
            services
                .index()
                .current()
                .lookup(me.parse().unwrap(), "tasks.web"),
            Lookup::Found(vec![ip("10.0.1.12"), ip("10.0.1.13")])
        );
        services.shutdown().await;
        upstream_task.abort();
    }
}

/// As root: VIP rules applied in a client namespace, backends in another, joined by a veth pair.
mod vip {
    use super::*;
    use std::os::fd::AsFd;
    use std::process::Command;
    use swarm::netsvc::vip::{self, Netns};

    const SUBNET: &str = "10.213.77";

    fn ip(args: &[&str]) {
        let out = Command::new("ip").args(args).output().expect("run ip");
        assert!(
            out.status.success(),
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Two namespaces (removed on drop, which takes the veth pair with them).
    struct Namespaces {
        client: String,
        backend: String,
    }

    impl Namespaces {
        fn create() -> Namespaces {
            let id = std::process::id();
            let ns = Namespaces {
                client: format!("nsvc{id}c"),
                backend: format!("nsvc{id}b"),
            };
            ip(&["netns", "add", &ns.client]);
            ip(&["netns", "add", &ns.backend]);
            let (vc, vb) = (format!("nsvc{id}c"), format!("nsvc{id}b"));
            ip(&["link", "add", &vc, "type", "veth", "peer", "name", &vb]);
            ip(&["link", "set", &vc, "netns", &ns.client]);
            ip(&["link", "set", &vb, "netns", &ns.backend]);
            ip(&[
                "-n",
                &ns.client,
                "addr",
                "add",
                &format!("{SUBNET}.31/24"),
                "dev",
                &vc,
            ]);
            ip(&[
                "-n",
                &ns.backend,
                "addr",
                "add",
                &format!("{SUBNET}.11/24"),
                "dev",
                &vb,
            ]);
            ip(&[
                "-n",
                &ns.backend,
                "addr",
                "add",
                &format!("{SUBNET}.12/24"),
                "dev",
                &vb,
            ]);
            for (n, dev) in [(&ns.client, &vc), (&ns.backend, &vb)] {
                ip(&["-n", n, "link", "set", dev, "up"]);
                ip(&["-n", n, "link", "set", "lo", "up"]);
            }
            ns
        }

        fn path(name: &str) -> Netns {
            Netns::Path(format!("/run/netns/{name}").into())
        }
    }

    impl Drop for Namespaces {
        fn drop(&mut self) {
            for n in [&self.client, &self.backend] {
                let _ = Command::new("ip").args(["netns", "del", n]).status();
            }
        }
    }

    /// Run `f` on a thread inside namespace `name`; sockets it makes stay in that namespace.
    fn inside<T: Send + 'static>(name: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
        let file = std::fs::File::open(format!("/run/netns/{name}")).unwrap();
        std::thread::spawn(move || {
            nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            f()
        })
        .join()
        .unwrap()
    }

    /// (backend that answered, the client address it saw) for one connection from the client namespace.
    fn through_vip(ns: &str, vip: &str) -> Result<(String, String), String> {
        let target: SocketAddr = format!("{vip}:8080").parse().unwrap();
        inside(ns, move || {
            TcpStream::connect_timeout(&target, Duration::from_secs(3))
        })
        .map_err(|e| e.to_string())
        .and_then(|mut c| {
            c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            writeln!(c, "who").map_err(|e| e.to_string())?;
            let mut line = String::new();
            BufReader::new(c)
                .read_line(&mut line)
                .map_err(|e| e.to_string())?;
            let mut parts = line.split_whitespace();
            Ok((
                parts.next().unwrap_or("").into(),
                parts.next().unwrap_or("").into(),
            ))
        })
    }

    /// A backend listener in the backend namespace answering `NAME PEER_ADDRESS`.
    fn backend(ns: &str, addr: &str, name: &'static str) -> Arc<AtomicBool> {
        let bind: SocketAddr = format!("{addr}:8080").parse().unwrap();
        let listener = inside(ns, move || TcpListener::bind(bind).unwrap());
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let Ok((conn, peer)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(2));
                    continue;
                };
                conn.set_nonblocking(false).unwrap();
                let mut w = conn.try_clone().unwrap();
                std::thread::spawn(move || {
                    for line in BufReader::new(conn).lines() {
                        if line.is_err() || writeln!(w, "{name} {}", peer.ip()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        stop
    }

    fn map(ready: [bool; 2]) -> NetworkMap {
        NetworkMap {
            endpoints: vec![
                endpoint("c1", "s_client", "front", &format!("{SUBNET}.31"), true),
                endpoint("w1", "s_web", "front", &format!("{SUBNET}.11"), ready[0]),
                endpoint("w2", "s_web", "front", &format!("{SUBNET}.12"), ready[1]),
            ],
            services: vec![
                service(
                    "s_client",
                    "client",
                    EndpointMode::Vip,
                    &[("front", &format!("{SUBNET}.3"))],
                ),
                service(
                    "s_web",
                    "web",
                    EndpointMode::Vip,
                    &[("front", &format!("{SUBNET}.2"))],
                ),
            ],
            ..Default::default()
        }
    }

    /// Apply the map and its pending VIP rules in the client namespace (task c1's).
    async fn apply(services: &mut Services, client_ns: &str, m: &NetworkMap) {
        assert!(services.update(m, "node1").await.problems.is_empty());
        let pending = services.pending_vips();
        assert!(pending.contains_key("c1"), "{pending:?}");
        let problems = services
            .apply_pending_vips(|task| (task == "c1").then(|| Namespaces::path(client_ns)))
            .await;
        assert!(problems.is_empty(), "{problems:?}");
        assert!(!services.pending_vips().contains_key("c1"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn vip_rules_in_a_task_namespace_balance_to_ready_backends_and_keep_the_source() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("VIP rules in a namespace need root: skipped");
            return;
        }
        let ns = Namespaces::create();
        let stops = [
            backend(&ns.backend, &format!("{SUBNET}.11"), "w1"),
            backend(&ns.backend, &format!("{SUBNET}.12"), "w2"),
        ];
        let mut services = Services::new(config(vec![], vec![]));
        apply(&mut services, &ns.client, &map([true, true])).await;
        let vip = format!("{SUBNET}.2");
        let client = format!("{SUBNET}.31");
        let mut seen = BTreeMap::new();
        for _ in 0..10 {
            let (name, peer) = tokio::task::spawn_blocking({
                let (n, v) = (ns.client.clone(), vip.clone());
                move || through_vip(&n, &v)
            })
            .await
            .unwrap()
            .unwrap();
            assert_eq!(
                peer, client,
                "the backend sees the client task's own address"
            );
            *seen.entry(name).or_insert(0) += 1;
        }
        assert_eq!(
            seen,
            BTreeMap::from([("w1".to_string(), 5), ("w2".to_string(), 5)])
        );

        // a connection open to w2 while w2 leaves the ready set: every new connection goes to w1, the open one
        // keeps its backend (conntrack in the client's namespace) to its end
        let target: SocketAddr = format!("{vip}:8080").parse().unwrap();
        let mut held = None;
        for _ in 0..2 {
            let c = inside(&ns.client, move || {
                TcpStream::connect_timeout(&target, Duration::from_secs(3))
            })
            .unwrap();
            c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            let mut w = c.try_clone().unwrap();
            let mut r = BufReader::new(c);
            writeln!(w, "who").unwrap();
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            if line.starts_with("w2 ") {
                held = Some((w, r));
                break;
            }
        }
        let (mut w, mut r) = held.expect("one of two connections in turn reaches w2");
        apply(&mut services, &ns.client, &map([true, false])).await;
        for _ in 0..6 {
            let (n, v) = (ns.client.clone(), vip.clone());
            let (name, _) = tokio::task::spawn_blocking(move || through_vip(&n, &v))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(name, "w1");
        }
        writeln!(w, "still").unwrap();
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        assert_eq!(line, format!("w2 {client}\n"));
        drop((w, r));
        // no ready backend at all: refused at once, not a timeout
        apply(&mut services, &ns.client, &map([false, false])).await;
        let (n, v) = (ns.client.clone(), vip.clone());
        let err = tokio::task::spawn_blocking(move || through_vip(&n, &v))
            .await
            .unwrap()
            .unwrap_err();
        assert!(err.contains("refused"), "{err}");
        // the table is in the client namespace only
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns.client,
                vip::NFT,
                "list",
                "table",
                "ip",
                vip::TABLE,
            ])
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("reject"),
            "{out:?}"
        );
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns.backend,
                vip::NFT,
                "list",
                "table",
                "ip",
                vip::TABLE,
            ])
            .output()
            .unwrap();
        assert!(
            !out.status.success(),
            "the backend namespace has no VIP table"
        );
        for s in &stops {
            s.store(true, Ordering::SeqCst);
        }
        services.shutdown().await;
        drop(ns);
    }
}
