//! `swarmctl swarm ca`: print the root CA certificate (the one that signs now), `--rotate` it (blocking with
//! docker's progress lines until every node holds a certificate of the new root, unless `--detach`), or
//! `--issue-client NAME` a client certificate for swarmctl on another machine.
//!
//! Must not: decide when a rotation is done (the manager does; this only shows it).

use std::path::Path;
use std::time::Duration;

use super::common::*;
use crate::api::control;

/// What `swarm ca` was asked.
pub struct CaArgs {
    /// `--issue-client NAME`.
    pub issue_client: Option<String>,
    /// `--out DIR` for the client certificate.
    pub out: std::path::PathBuf,
    /// `--rotate`.
    pub rotate: bool,
    /// `--detach`: start the rotation and return.
    pub detach: bool,
    /// `-q`: no progress, only the certificate.
    pub quiet: bool,
}

/// Runs `swarm ca`.
pub async fn run(c: &mut Client, args: CaArgs) -> CmdResult {
    if let Some(name) = args.issue_client {
        if args.rotate {
            return Err("--issue-client and --rotate cannot be used together".into());
        }
        return issue_client(c, &name, &args.out).await;
    }
    let reply = c
        .root_ca(control::RootCaRequest {
            rotate: args.rotate,
        })
        .await
        .map_err(rpc)?
        .into_inner();
    if !args.rotate {
        if reply.rotating && !args.quiet {
            eprintln!(
                "A root CA rotation is under way: {}/{} nodes rotated.",
                reply.rotated, reply.total
            );
            for p in pending_lines(&reply) {
                eprintln!("{p}");
            }
        }
        print!("{}", reply.cert_pem);
        return Ok(());
    }
    if args.detach {
        if !args.quiet {
            eprintln!(
                "Root CA rotation started: `swarmctl swarm ca` shows its progress. The old join tokens stop \
                 working once it is done."
            );
        }
        return Ok(());
    }
    let mut last = None;
    let mut reply = reply;
    loop {
        if !args.quiet {
            let line = (reply.rotated, reply.total, pending_lines(&reply));
            if last.as_ref() != Some(&line) {
                if line.1 > 0 {
                    eprintln!("rotated TLS certificates: {}/{} nodes", line.0, line.1);
                    for p in &line.2 {
                        eprintln!("{p}");
                    }
                }
                last = Some(line);
            }
        }
        if !reply.rotating {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        reply = c
            .root_ca(control::RootCaRequest { rotate: false })
            .await
            .map_err(rpc)?
            .into_inner();
    }
    if !args.quiet {
        eprintln!("rotated CA certificates");
    }
    print!("{}", reply.cert_pem);
    Ok(())
}

/// One line per node the rotation waits for; a down node holds it until it comes back or is removed.
fn pending_lines(reply: &control::RootCaResponse) -> Vec<String> {
    reply
        .pending
        .iter()
        .map(|p| {
            let short = p.id.get(..12).unwrap_or(&p.id);
            if p.state == "down" {
                format!(
                    "  waiting for {} ({short}): down — the rotation finishes when it is back, or once it is \
                     removed with `swarmctl node rm {short}`",
                    p.hostname
                )
            } else {
                format!("  waiting for {} ({short}): {}", p.hostname, p.state)
            }
        })
        .collect()
}

async fn issue_client(c: &mut Client, name: &str, out: &Path) -> CmdResult {
    let reply = c
        .issue_client_certificate(control::ClientCertRequest {
            name: name.to_string(),
        })
        .await
        .map_err(rpc)?
        .into_inner();
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let write = |file: &str, text: &str, private: bool| {
        let path = out.join(file);
        let r = if private {
            crate::pki::write_private_file(&path, text.as_bytes())
        } else {
            crate::pki::write_public_file(&path, text.as_bytes())
        };
        r.map_err(|e| e.to_string())
    };
    write("cert.pem", &reply.cert_pem, false)?;
    write("key.pem", &reply.key_pem, true)?;
    write("ca.pem", &reply.ca_pem, false)?;
    let dir = out.display();
    println!(
        "Client certificate for {name} written to {dir}/cert.pem, {dir}/key.pem and {dir}/ca.pem.\n\
         Use it with: swarmctl --host tcp://MANAGER:PORT --tls-cert {dir}/cert.pem --tls-key {dir}/key.pem --tls-ca {dir}/ca.pem ..."
    );
    Ok(())
}
