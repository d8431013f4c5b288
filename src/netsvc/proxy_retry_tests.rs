//! The proxy's connect retries over real loopback sockets: a backend that refuses is skipped, a set swapped
//! while a client waits is tried again, and a port whose backends all refuse turns the client away.

use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A backend on 127.0.0.1 answering every connection with `name`.
async fn backend(name: &'static str) -> (SocketAddr, JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let _ = s.write_all(name.as_bytes()).await;
        }
    });
    (addr, task)
}

/// An address nothing listens on (connections are refused).
async fn refused() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

async fn answer(mut s: TcpStream) -> String {
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

/// A backend set of local tasks at `addrs`.
fn tasks(addrs: Vec<SocketAddr>) -> crate::netsvc::backends::PortBackends {
    let all: Vec<_> = addrs
        .into_iter()
        .map(crate::netsvc::backends::Backend::Task)
        .collect();
    crate::netsvc::backends::PortBackends {
        local: all.clone(),
        all,
        peers: Default::default(),
    }
}

fn peer() -> SocketAddr {
    "127.0.0.1:1".parse().unwrap()
}

#[tokio::test]
async fn a_refusing_backend_is_skipped_for_the_next_ready_one() {
    let (alive, _task) = backend("alive").await;
    let set = BackendSet::default();
    set.set(tasks(vec![refused().await, alive, refused().await]));
    for _ in 0..6 {
        let s = connect_upstream(&set, peer()).await.expect("a backend");
        assert_eq!(answer(s).await, "alive");
    }
}

#[tokio::test]
async fn a_set_swapped_while_the_client_waits_is_tried_again() {
    let (new, _task) = backend("new").await;
    let set = Arc::new(BackendSet::default());
    // the only backend stopped; the map with its replacement lands after the first round failed
    set.set(tasks(vec![refused().await]));
    let swap = {
        let set = set.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            set.set(tasks(vec![new]));
        })
    };
    let s = connect_upstream(&set, peer())
        .await
        .expect("the replacement");
    assert_eq!(answer(s).await, "new");
    swap.await.unwrap();
}

#[tokio::test]
async fn a_port_whose_backends_all_refuse_turns_the_client_away() {
    let set = BackendSet::default();
    assert!(connect_upstream(&set, peer()).await.is_none(), "no backend");
    set.set(tasks(vec![refused().await, refused().await]));
    assert!(connect_upstream(&set, peer()).await.is_none());
}

/// A task the map makes not ready (its stop was asked) gets no new connection through the published port
/// once the node's service layer applied that map: the swap happens inside `update`.
#[tokio::test]
async fn a_task_made_not_ready_gets_no_connection_once_the_map_is_applied() {
    use crate::model::netmap::{Endpoint, NetworkInfo, NetworkMap, ServiceEndpoint};
    use crate::model::service::{PortConfig, PortProtocol, PublishMode};
    // two tasks listening on the same target port at their own addresses
    let l1 = TcpListener::bind("127.0.0.2:0").await.unwrap();
    let target = l1.local_addr().unwrap().port();
    let Ok(l2) = TcpListener::bind(("127.0.0.3", target)).await else {
        eprintln!("skipped: 127.0.0.3:{target} is taken");
        return;
    };
    for (l, name) in [(l1, "w1"), (l2, "w2")] {
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let _ = s.write_all(name.as_bytes()).await;
            }
        });
    }
    let published = refused().await.port();
    let map = |w1_ready: bool| NetworkMap {
        networks: vec![NetworkInfo {
            id: "ing".into(),
            ingress: true,
            ..Default::default()
        }],
        endpoints: [("w1", "127.0.0.2", w1_ready), ("w2", "127.0.0.3", true)]
            .into_iter()
            .map(|(task, address, ready)| {
                std::sync::Arc::new(Endpoint {
                    task_id: task.into(),
                    service_id: "web".into(),
                    node_id: "n1".into(),
                    network_id: "ing".into(),
                    address: address.into(),
                    ready,
                    ..Default::default()
                })
            })
            .collect(),
        services: vec![ServiceEndpoint {
            service_id: "web".into(),
            name: "s_web".into(),
            ports: vec![PortConfig {
                protocol: PortProtocol::Tcp,
                target_port: target,
                published_port: Some(published),
                publish_mode: PublishMode::Ingress,
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    let mut services = crate::netsvc::Services::new(crate::netsvc::ServicesConfig {
        dns_listen: Some(Vec::new()),
        dns_port: 5353,
        upstreams: Vec::new(),
        publish_ip: IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
    });
    let through = || async {
        let s = TcpStream::connect(("127.0.0.1", published)).await.unwrap();
        answer(s).await
    };
    let problems = services.update(&map(true), "n1").await.problems;
    assert!(problems.is_empty(), "{problems:?}");
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..4 {
        seen.insert(through().await);
    }
    assert_eq!(seen, ["w1".to_string(), "w2".into()].into());
    services.update(&map(false), "n1").await;
    for _ in 0..6 {
        assert_eq!(through().await, "w2", "w1 is draining");
    }
    services.shutdown().await;
}
