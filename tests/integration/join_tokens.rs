//! Join tokens with a real `swarmd`: `swarm join-token` prints docker's join command or, with `-q`, the token;
//! the token pins the cluster's CA; `--rotate` replaces one role's token only; no token is written in plaintext
//! to the state directory or the log.

use super::cluster::Swarmd;

fn token_of(d: &Swarmd, role: &str) -> String {
    d.ctl_ok(&["swarm", "join-token", "-q", role])
        .trim()
        .to_string()
}

/// Every file under `dir`, recursively (sockets and unreadable files skipped).
fn files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files(&p));
        } else if p.is_file() {
            out.push(p);
        }
    }
    out
}

#[test]
fn join_tokens_pin_the_ca_rotate_per_role_and_never_touch_disk_in_plaintext() {
    let d = Swarmd::start();
    let worker = token_of(&d, "worker");
    let manager = token_of(&d, "manager");
    assert_ne!(worker, manager);
    let parts: Vec<&str> = worker.split('-').collect();
    assert_eq!(parts.len(), 4, "{worker}");
    assert_eq!((parts[0], parts[1]), ("SWMTKN", "1"));
    assert_eq!(parts[2].len(), 50, "CA digest in base 36: {worker}");
    assert_eq!(parts[3].len(), 25, "secret: {worker}");

    // the digest is the CA certificate's
    let pem = std::fs::read_to_string(d.state().join("certs/ca.crt")).unwrap();
    let der = rustls_pki_types::pem::PemObject::from_pem_slice(pem.as_bytes())
        .map(|c: rustls_pki_types::CertificateDer<'static>| c.to_vec())
        .expect("ca.crt is a PEM certificate");
    let digest = swarm::pki::CaDigest::of_der(&der);
    assert_eq!(parts[2], digest.to_base36());

    let out = d.ctl_ok(&["swarm", "join-token", "worker"]);
    assert!(
        out.contains("To add a worker to this swarm, run the following command:"),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "swarmd --join-addr 127.0.0.1:{} --join-token {worker}",
            d.port
        )),
        "{out}"
    );

    // rotation replaces the worker token only, and survives a restart (it is in the Raft store)
    let out = d.ctl_ok(&["swarm", "join-token", "--rotate", "worker"]);
    assert!(
        out.starts_with("Successfully rotated worker join token."),
        "{out}"
    );
    let rotated = token_of(&d, "worker");
    assert_ne!(rotated, worker);
    assert!(rotated.starts_with(&format!("SWMTKN-1-{}-", parts[2])));
    assert_eq!(token_of(&d, "manager"), manager);
    let mut d = d;
    d.kill9();
    d.spawn();
    assert_eq!(token_of(&d, "worker"), rotated);

    let bad = d.ctl(&["swarm", "join-token", "admin"]);
    assert_ne!(bad.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("expected worker or manager"));

    // never in plaintext on disk or in the log
    for token in [&rotated, &manager] {
        let secret = token.rsplit('-').next().unwrap();
        for f in files(d.state()) {
            let bytes = std::fs::read(&f).unwrap_or_default();
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "a join token's secret is in {f:?}"
            );
        }
        assert!(
            !d.log().contains(secret),
            "a join token's secret is in the log"
        );
    }
}
