//! Joining with a token against a real manager (the manager's half of issue 9): the joining node pins the CA
//! from the token, gets a worker certificate with the id the manager chose, and can then open a dispatcher
//! session; bad tokens, rotated tokens, manager tokens, callers without a certificate and a node using another
//! node's session are refused with a precise error.

use std::process::Command;

use super::cluster::Swarmd;
use swarm::api::dispatcher::{
    dispatcher_client::DispatcherClient, HeartbeatRequest, NodeDescription, SessionRequest,
};
use swarm::node::join::{join, JoinError, Joined};
use swarm::pki::{self, NodeRole};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn token(d: &Swarmd, role: &str) -> String {
    d.ctl_ok(&["swarm", "join-token", "-q", role])
        .trim()
        .to_string()
}

async fn dispatcher(
    addr: &str,
    config: std::sync::Arc<rustls::ClientConfig>,
) -> DispatcherClient<tonic::transport::Channel> {
    DispatcherClient::new(
        swarm::transport::tls_channel(addr, config)
            .await
            .expect("connect"),
    )
}

/// Opens a session with `joined`'s certificate; returns (session id, node id the manager answered).
async fn open_session(addr: &str, joined: &Joined) -> (String, String) {
    let ca = pki::cert_der_from_pem(&joined.ca_pem, "ca").unwrap();
    let config = pki::client_config(std::slice::from_ref(&ca), &joined.creds).unwrap();
    let mut c = dispatcher(addr, config).await;
    let mut stream = c
        .session(SessionRequest {
            description: Some(NodeDescription {
                hostname: "joiner".into(),
                ..Default::default()
            }),
        })
        .await
        .expect("session")
        .into_inner();
    let first = stream
        .message()
        .await
        .expect("first message")
        .expect("message");
    // keep the session's stream open for the rest of the test
    tokio::spawn(async move { while let Ok(Some(_)) = stream.message().await {} });
    (first.session_id, first.node_id)
}

#[test]
fn a_node_joins_with_a_worker_token_and_bad_tokens_are_refused_precisely() {
    pki::install_crypto_provider();
    let d = Swarmd::start();
    let addr = format!("127.0.0.1:{}", d.port);
    let worker = token(&d, "worker");
    let info: serde_json::Value =
        serde_json::from_str(&d.ctl_ok(&["swarm", "info", "--format", "json"])).unwrap();
    let cluster_id = info["ClusterID"].as_str().unwrap().to_string();
    let rt = rt();

    // a good token: a worker certificate of this cluster, with an id the manager chose
    let joined = rt.block_on(join(&addr, &worker)).expect("join");
    let id = joined.creds.identity().clone();
    assert_eq!(id.role, NodeRole::Worker);
    assert_eq!(id.cluster_id, cluster_id);
    assert_eq!(id.node_id.len(), 25, "{id:?}");
    let pem = d.state().with_extension("worker.crt");
    std::fs::write(&pem, joined.creds.cert_pem()).unwrap();
    let text = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(&pem)
        .output()
        .expect("openssl");
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains(&format!("CN = {}", id.node_id)), "{text}");
    assert!(text.contains("OU = swarm-worker"), "{text}");
    assert!(text.contains(&format!("O = {cluster_id}")), "{text}");
    assert!(text.contains("Not After"), "{text}");

    // with it, a dispatcher session for its own id; the manager lists it as a worker
    let (session, node_id) = rt.block_on(open_session(&addr, &joined));
    assert_eq!(node_id, id.node_id);
    let ls = d.ctl_ok(&["node", "ls"]);
    assert!(
        ls.contains(&id.node_id[..12]) || ls.contains("joiner"),
        "{ls}"
    );

    // another joined node cannot use that session
    let other = rt.block_on(join(&addr, &worker)).expect("second join");
    assert_ne!(other.creds.identity().node_id, id.node_id);
    let err = rt.block_on(async {
        let ca = pki::cert_der_from_pem(&other.ca_pem, "ca").unwrap();
        let mut c = dispatcher(
            &addr,
            pki::client_config(std::slice::from_ref(&ca), &other.creds).unwrap(),
        )
        .await;
        c.heartbeat(HeartbeatRequest {
            session_id: session.clone(),
        })
        .await
        .unwrap_err()
    });
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert!(
        err.message().contains("belongs to another node"),
        "{}",
        err.message()
    );

    // a caller without a certificate reaches the CA only
    let err = rt.block_on(async {
        let mut c = dispatcher(&addr, pki::bootstrap_client_config().unwrap()).await;
        c.heartbeat(HeartbeatRequest {
            session_id: session,
        })
        .await
        .unwrap_err()
    });
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    assert!(
        err.message().contains("a node certificate is required"),
        "{}",
        err.message()
    );

    // a wrong secret
    let mut wrong = worker.clone();
    let last = wrong.pop().unwrap();
    wrong.push(if last == 'a' { 'b' } else { 'a' });
    let err = rt.block_on(join(&addr, &wrong)).err().expect("refused");
    assert!(
        err.to_string()
            .contains("join token is not valid for this cluster (wrong or rotated secret)"),
        "{err}"
    );

    // a token pinning another CA: the joining node notices before sending it
    let parts: Vec<&str> = worker.split('-').collect();
    let foreign = format!(
        "SWMTKN-1-{}-{}",
        pki::CaDigest::of_der(b"another cluster").to_base36(),
        parts[3]
    );
    let err = rt.block_on(join(&addr, &foreign)).err().expect("refused");
    assert!(matches!(err, JoinError::WrongCa { .. }), "{err}");
    assert!(
        err.to_string().contains("does not match the join token"),
        "{err}"
    );

    // malformed
    let err = rt
        .block_on(join(&addr, "SWMTKN-1-abc"))
        .err()
        .expect("refused");
    assert!(err.to_string().contains("malformed join token"), "{err}");

    // rotated: the old token stops working at once
    d.ctl_ok(&["swarm", "join-token", "--rotate", "worker"]);
    let err = rt.block_on(join(&addr, &worker)).err().expect("refused");
    assert!(err.to_string().contains("wrong or rotated secret"), "{err}");
    rt.block_on(join(&addr, &token(&d, "worker")))
        .expect("the new token works");

    // a manager token gives a manager certificate
    let joined = rt
        .block_on(join(&addr, &token(&d, "manager")))
        .expect("a manager token joins");
    assert_eq!(joined.creds.identity().role, swarm::pki::NodeRole::Manager);

    // the manager logged the refusals, never a token
    let log = d.log();
    assert!(log.contains("join refused"), "{log}");
    assert!(!log.contains(parts[3]), "a token secret is in the log");
}

/// A certificate of another cluster is refused at the TLS handshake, with a line in the manager's log.
#[test]
fn a_certificate_of_another_cluster_is_refused() {
    pki::install_crypto_provider();
    let a = Swarmd::start();
    let b = Swarmd::start();
    let rt = rt();
    let from_b = rt
        .block_on(join(&format!("127.0.0.1:{}", b.port), &token(&b, "worker")))
        .expect("join b");
    let ca_a = pki::cert_der_from_pem(
        &std::fs::read_to_string(a.state().join("certs/ca.crt")).unwrap(),
        "ca",
    )
    .unwrap();
    let addr_a = format!("127.0.0.1:{}", a.port);
    let err = rt.block_on(async {
        let config = pki::client_config(std::slice::from_ref(&ca_a), &from_b.creds).unwrap();
        match swarm::transport::tls_channel(&addr_a, config).await {
            Err(e) => e,
            Ok(channel) => DispatcherClient::new(channel)
                .session(SessionRequest::default())
                .await
                .err()
                .map(|s| s.message().to_string())
                .unwrap_or_default(),
        }
    });
    assert!(!err.is_empty(), "a foreign certificate was accepted");
    super::cluster::wait_for(10, "the refusal in the manager's log", || {
        a.log().contains("TLS handshake refused").then_some(())
    });
    assert!(!a
        .ctl_ok(&["node", "ls"])
        .contains(&from_b.creds.identity().node_id));
}

/// `swarmctl --host tcp://` works with a client certificate from `swarm ca --issue-client`; a worker's
/// certificate, no certificate, or a client certificate opening a node session are refused.
#[test]
fn remote_swarmctl_needs_a_client_certificate() {
    pki::install_crypto_provider();
    let m = Swarmd::start();
    let certs = tempfile::tempdir().unwrap();
    let out = m.ctl_ok(&[
        "swarm",
        "ca",
        "--issue-client",
        "alice",
        "--out",
        certs.path().to_str().unwrap(),
    ]);
    assert!(out.contains("cert.pem"), "{out}");
    let key_mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(certs.path().join("key.pem"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(key_mode & 0o777, 0o600);
    let tcp = format!("tcp://127.0.0.1:{}", m.port);
    let remote = |args: &[&str], cert: &std::path::Path, key: &std::path::Path| {
        Command::new(super::cluster::bin("swarmctl"))
            .env_remove("SWARM_HOST")
            .args(["--host", &tcp, "--tls-cert"])
            .arg(cert)
            .arg("--tls-key")
            .arg(key)
            .arg("--tls-ca")
            .arg(certs.path().join("ca.pem"))
            .args(args)
            .output()
            .unwrap()
    };
    let ok = remote(
        &["node", "ls"],
        &certs.path().join("cert.pem"),
        &certs.path().join("key.pem"),
    );
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("Leader"));
    // issuing is for the local socket only
    let again = remote(
        &["swarm", "ca", "--issue-client", "mallory"],
        &certs.path().join("cert.pem"),
        &certs.path().join("key.pem"),
    );
    assert!(String::from_utf8_lossy(&again.stderr).contains("local socket only"));

    // a worker's certificate may not
    let rt = rt();
    let joined = rt
        .block_on(join(&format!("127.0.0.1:{}", m.port), &token(&m, "worker")))
        .expect("join");
    let wdir = tempfile::tempdir().unwrap();
    std::fs::write(wdir.path().join("cert.pem"), joined.creds.cert_pem()).unwrap();
    std::fs::write(wdir.path().join("key.pem"), joined.creds.key_pem()).unwrap();
    let refused = remote(
        &["service", "ls"],
        &wdir.path().join("cert.pem"),
        &wdir.path().join("key.pem"),
    );
    assert_ne!(refused.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&refused.stderr)
            .contains("a worker certificate cannot use the control API"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    // nor take part in Raft between managers, nor ask for the cluster's keys
    let roots = swarm::pki::certs_from_pem(&joined.ca_pem, "ca").unwrap();
    let config = swarm::pki::client_config(&roots, &joined.creds).unwrap();
    let cluster = joined.creds.identity().cluster_id.clone();
    let addr = format!("127.0.0.1:{}", m.port);
    rt.block_on(async {
        use swarm::api::raft::{raft_peer_client::RaftPeerClient, JoinManagerRequest, RaftMessage};
        let ch = swarm::transport::tls_channel_to_manager(&addr, config, &cluster)
            .await
            .unwrap();
        let mut peer = RaftPeerClient::new(ch);
        let e = peer
            .call(RaftMessage {
                rpc: 1,
                payload: vec![],
            })
            .await
            .expect_err("a worker's raft message");
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert!(
            e.message()
                .contains("a worker certificate cannot take part in raft"),
            "{}",
            e.message()
        );
        let e = peer
            .join_manager(JoinManagerRequest {
                raft_id: 7,
                addr: "127.0.0.1:1".into(),
            })
            .await
            .expect_err("a worker asking for the keys");
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
    });
    assert!(m.log().contains("raft call refused"));

    // without certificate files: a clear error before dialing
    let bare = Command::new(super::cluster::bin("swarmctl"))
        .env_remove("SWARM_HOST")
        .args(["--host", &tcp, "service", "ls"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&bare.stderr).contains("needs --tls-cert"));

    // a client certificate is not a node
    let client = pki::NodeCredentials::from_pem(
        &std::fs::read_to_string(certs.path().join("cert.pem")).unwrap(),
        &std::fs::read_to_string(certs.path().join("key.pem")).unwrap(),
    )
    .unwrap();
    let err = rt.block_on(async {
        let ca = pki::cert_der_from_pem(&joined.ca_pem, "ca").unwrap();
        let mut c = dispatcher(
            &format!("127.0.0.1:{}", m.port),
            pki::client_config(std::slice::from_ref(&ca), &client).unwrap(),
        )
        .await;
        c.session(SessionRequest::default()).await.unwrap_err()
    });
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert!(err
        .message()
        .contains("client certificate cannot open a node session"));
}
