//! `swarmctl stack deploy`: sends a stack to the cluster, prints what changes and waits for it to converge.
//! The exit status is a verdict for CI: 0 converged, 1 failed (a service failed, a job failed, an update paused
//! or rolled back, the timeout), 2 invalid input (files that do not load or validate, a stack the cluster refuses),
//! 3 cluster unreachable. With `--format json` every line on stdout is one JSON event: the plan (`Type: change`),
//! progress per service (`Type: progress`: service, running/desired, update state, message) and the verdict
//! (`Type: result`).
//!
//! Must not: interpret stack files (that is `stack::load` / `stack::convert`) or decide convergence on the server.

use super::plan::{load_request, plan_items, report};
use super::wait::{wait_events, WaitError};
use super::{DeployArgs, OutputFormat};
use crate::cli::common::*;
use crate::model::{PlanAction, PlanItem};
use crate::stack;

/// Exit status: the stack converged (or nothing changed, or a dry run / --detach was accepted).
pub const EXIT_CONVERGED: i32 = 0;
/// Exit status: a service or job failed, an update paused or rolled back, or the timeout passed.
pub const EXIT_FAILED: i32 = 1;
/// Exit status: the files do not load or validate, or the cluster refused the stack.
pub const EXIT_INVALID: i32 = 2;
/// Exit status: the cluster could not be reached.
pub const EXIT_UNREACHABLE: i32 = 3;

/// A deploy that did not converge: the exit status and the message.
struct Verdict {
    code: i32,
    result: &'static str,
    message: String,
}

impl Verdict {
    fn new(code: i32, result: &'static str, message: impl Into<String>) -> Self {
        Verdict {
            code,
            result,
            message: message.into(),
        }
    }
}

/// The exit status of a refused call: unreachable (3) for an unavailable cluster, invalid input (2) for a stack
/// the cluster refuses, else failed (1).
fn call_failed(status: tonic::Status) -> Verdict {
    let message = rpc(status.clone());
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::Unknown => {
            Verdict::new(EXIT_UNREACHABLE, "unreachable", message)
        }
        tonic::Code::InvalidArgument | tonic::Code::NotFound | tonic::Code::AlreadyExists => {
            Verdict::new(EXIT_INVALID, "invalid", message)
        }
        tonic::Code::FailedPrecondition if !status.message().starts_with("no space left") => {
            Verdict::new(EXIT_INVALID, "invalid", message)
        }
        _ => Verdict::new(EXIT_FAILED, "failed", message),
    }
}

fn result_event(stack: &str, code: i32, result: &str, message: &str) -> serde_json::Value {
    serde_json::json!({
        "Type": "result", "Time": now_ms(), "Stack": stack, "Result": result, "ExitCode": code, "Message": message,
    })
}

fn change_event(stack: &str, i: &PlanItem) -> serde_json::Value {
    serde_json::json!({
        "Type": "change", "Time": now_ms(), "Stack": stack, "Action": i.action.name(), "Kind": i.kind.name(),
        "Name": i.name, "Fields": i.fields,
    })
}

/// `stack deploy`: returns the exit status (see the module's doc).
pub fn deploy(host: Option<String>, args: DeployArgs) -> i32 {
    let json = args.format == OutputFormat::Json;
    let name = args.name.clone();
    let finish = |v: Result<String, Verdict>| -> i32 {
        let (code, result, message) = match &v {
            Ok(m) => (EXIT_CONVERGED, "converged", m.as_str()),
            Err(v) => (v.code, v.result, v.message.as_str()),
        };
        if json {
            println!("{}", result_event(&name, code, result, message));
        }
        if let Err(v) = &v {
            eprintln!("error: {}", v.message);
        }
        code
    };
    let request = match load_request(&host, &args.files, &args.name, args.prune, args.dry_run) {
        Ok(r) => r,
        Err(problems) => {
            return finish(Err(Verdict::new(
                EXIT_INVALID,
                "invalid",
                problems.join("\n"),
            )))
        }
    };
    let timeout = match stack::units::parse_duration(&args.timeout) {
        Ok(t) => t,
        Err(e) => {
            return finish(Err(Verdict::new(
                EXIT_INVALID,
                "invalid",
                format!("--timeout: {e}"),
            )));
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return finish(Err(Verdict::new(
                EXIT_FAILED,
                "failed",
                format!("cannot start: {e}"),
            )))
        }
    };
    let outcome = rt.block_on(async {
        let mut c = client(&host)
            .await
            .map_err(|e| Verdict::new(EXIT_UNREACHABLE, "unreachable", e))?;
        let reply = c
            .deploy_stack(request)
            .await
            .map_err(call_failed)?
            .into_inner();
        let waits = |e: WaitError| match e {
            WaitError::Failed(m) => Verdict::new(EXIT_FAILED, "failed", m),
            WaitError::TimedOut(m) => Verdict::new(EXIT_FAILED, "timeout", m),
            WaitError::Unreachable(m) => Verdict::new(EXIT_UNREACHABLE, "unreachable", m),
        };
        if !json {
            let changed = report(&args.name, &reply, args.dry_run)
                .map_err(|m| Verdict::new(EXIT_FAILED, "failed", m))?;
            if changed && !args.detach && !reply.changed_services.is_empty() {
                wait_events(&mut c, &args.name, &reply.changed_services, timeout, false)
                    .await
                    .map_err(waits)?;
            }
            return Ok(String::new());
        }
        let items = plan_items(&reply).map_err(|m| Verdict::new(EXIT_FAILED, "failed", m))?;
        for i in items.iter().filter(|i| i.action != PlanAction::Unchanged) {
            println!("{}", change_event(&args.name, i));
        }
        if !items.iter().any(PlanItem::is_change) {
            return Ok("up to date: nothing to change".to_string());
        }
        if args.dry_run {
            return Ok("dry run: nothing changed".to_string());
        }
        if args.detach || reply.changed_services.is_empty() {
            return Ok(format!("revision {} accepted", reply.revision));
        }
        wait_events(&mut c, &args.name, &reply.changed_services, timeout, true)
            .await
            .map(|()| format!("revision {} converged", reply.revision))
            .map_err(waits)
    });
    finish(outcome)
}
