//! Tests of the rolling updater: one reconcile on a given state (table), and whole clusters converging
//! through every controller and a simulated agent, with invariants checked at every step (`sim`), and
//! failing updates and rollbacks (`failures`).

mod failures;
mod sim;
mod table;

use std::time::Duration;

use super::*;
use crate::manager::testutil::*;
use crate::manager::{Controller, CONTROLLERS};
use crate::model::{FileReference, Node, ServiceSpec, TaskStatus};
use crate::util::SeqIds;

const T0: Millis = 1_000_000;

/// The ops of a plan in words: creates with their desired state, service updates with their status.
fn words(plan: &Plan) -> Vec<String> {
    plan.ops
        .iter()
        .map(|op| match op {
            Op::CreateTask(t) => format!(
                "create {}/{} v{} desired={:?}",
                t.service_id, t.slot, t.spec_version, t.desired_state
            ),
            Op::UpdateTask { task, .. } => format!(
                "update {} v{} desired={:?}",
                task.id, task.spec_version, task.desired_state
            ),
            Op::UpdateService { service, .. } => {
                let s = service.update_status.as_ref().expect("a status");
                format!(
                    "service {} v{} {:?}: {}",
                    service.id, service.spec_version, s.state, s.message
                )
            }
            other => format!("{other:?}"),
        })
        .collect()
}

fn image(img: &str) -> crate::model::TaskSpec {
    let mut s = service("x", ServiceMode::Global).spec.task;
    s.container.image = img.into();
    s
}

/// Service `s1`: `replicas` on image v2 at spec version 2, updating since T0, the previous spec on v1.
fn updating(replicas: u64, cfg: UpdateConfig) -> Service {
    let mut s = service("s1", ServiceMode::Replicated { replicas });
    s.spec.task = image("v1");
    let previous = s.spec.clone();
    s.spec.task = image("v2");
    s.spec.update = cfg;
    s.spec_version = 2;
    s.previous_spec = Some(previous);
    s.update_status = Some(UpdateStatus {
        state: UpdateState::Updating,
        started_at: T0 - 15_000,
        completed_at: None,
        message: "update in progress".into(),
    });
    s
}

/// A task of s1 in `slot` on n1 at spec version `v` (spec image `v{v}`), desired and status as given.
fn at(id: &str, slot: u64, v: u64, desired: TaskState, status: TaskState, ts: Millis) -> Task {
    let mut t = task(id, "s1", slot, Some("n1"), desired, status);
    t.spec = image(&format!("v{v}"));
    t.spec_version = v;
    t.status.timestamp = ts;
    if status < TaskState::Assigned {
        t.node_id = None;
    }
    t
}

fn cfg(parallelism: u64, order: UpdateOrder) -> UpdateConfig {
    UpdateConfig {
        parallelism,
        order,
        ..UpdateConfig::default()
    }
}
