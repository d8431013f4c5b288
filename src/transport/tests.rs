//! The mutual-TLS listener under an idle-connection flood: connections past the handshake cap wait, idle
//! peers are dropped at the timeout, and a real node still gets through.

use std::time::{Duration, SystemTime};

use futures::StreamExt;
use rustls_pki_types::ServerName;

use super::tls_incoming_capped;
use crate::pki::{
    client_config, server_config, NodeCertSpec, NodeCredentials, NodeKey, NodeRole, RootCa,
};

fn issue(ca: &RootCa, node_id: &str, role: NodeRole) -> NodeCredentials {
    let key = NodeKey::generate().expect("key");
    let csr = key.csr_pem(node_id).expect("csr");
    let spec = NodeCertSpec::new(node_id, role).with_ip([127, 0, 0, 1].into());
    let cert = ca
        .sign_node_csr(&csr, &spec, SystemTime::now())
        .expect("sign");
    NodeCredentials::new(&cert, &key).expect("creds")
}

#[tokio::test]
async fn an_idle_connection_flood_past_the_cap_does_not_lock_out_a_real_node() {
    crate::pki::install_crypto_provider();
    let ca = RootCa::generate("cluster-t", SystemTime::now()).expect("ca");
    let manager = issue(&ca, "mgr1", NodeRole::Manager);
    let worker = issue(&ca, "wrk1", NodeRole::Worker);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let config =
        server_config(std::slice::from_ref(ca.cert_der()), &manager).expect("server config");
    let mut incoming = Box::pin(tls_incoming_capped(
        listener,
        std::sync::Arc::new(std::sync::RwLock::new(config)),
        2,
        Duration::from_millis(300),
    ));
    // eight peers that connect and never say a word: more than the cap of two
    let mut idle = Vec::new();
    for _ in 0..8 {
        idle.push(tokio::net::TcpStream::connect(addr).await.expect("connect"));
    }
    let client = tokio::spawn(async move {
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let connector = tokio_rustls::TlsConnector::from(
            client_config(std::slice::from_ref(ca.cert_der()), &worker).expect("client"),
        );
        let name = ServerName::try_from("127.0.0.1").expect("name");
        connector.connect(name, tcp).await.map(drop)
    });
    let conn = tokio::time::timeout(Duration::from_secs(30), incoming.next())
        .await
        .expect("the real node is served once idle peers time out")
        .expect("stream open")
        .expect("connection");
    assert_eq!(conn.peer.identity.expect("a certificate").node_id, "wrk1");
    client.await.expect("join").expect("client handshake");
    drop(idle);
}
