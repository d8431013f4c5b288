//! Autolock from the command line: `swarm update --autolock=true` prints the unlock key once, like docker;
//! `swarm unlock` reads the key (a prompt on a terminal, else the first line of standard input) and unlocks a
//! restarted manager; `swarm unlock-key [-q] [--rotate]` shows or replaces the key.
//!
//! Must not: take the key as a command-line argument (it would land in the shell's history and `ps`).

use std::io::IsTerminal;

use super::common::*;
use crate::api::control;

/// Docker's message after autolock is turned on (or the key rotated), with the key.
pub fn print_key(key: &str) {
    println!(
        "To unlock a swarm manager after it restarts, run the `swarmctl swarm unlock`\ncommand and provide the \
         following key:\n\n    {key}\n\nPlease remember to store this key in a password manager, since without \
         it you\nwill not be able to restart the manager."
    );
}

/// `swarm unlock-key [-q] [--rotate]`.
pub async fn unlock_key(c: &mut Client, quiet: bool, rotate: bool) -> CmdResult {
    let key = c
        .unlock_key(control::UnlockKeyRequest { rotate })
        .await
        .map_err(rpc)?
        .into_inner()
        .key;
    if quiet {
        println!("{key}");
    } else {
        if rotate {
            println!("Successfully rotated manager unlock key.\n");
        }
        print_key(&key);
    }
    Ok(())
}

/// `swarm unlock`.
pub async fn unlock(host: &Option<String>) -> CmdResult {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("Please enter unlock key: ");
    }
    let mut line = String::new();
    stdin
        .read_line(&mut line)
        .map_err(|e| format!("cannot read the unlock key: {e}"))?;
    let key = line.trim().to_string();
    if key.is_empty() {
        return Err("no unlock key given (type it at the prompt, or pipe it in)".into());
    }
    let channel =
        crate::cli::client::connect_channel(&crate::cli::client::resolve_host(host.as_deref()))
            .await?;
    crate::api::control::lock_client::LockClient::new(channel)
        .unlock(control::UnlockRequest { key })
        .await
        .map_err(|s| match s.code() {
            tonic::Code::Unimplemented => "this node is not a manager: nothing to unlock".into(),
            _ => s.message().to_string(),
        })?;
    eprintln!("Swarm unlocked.");
    Ok(())
}
