//! The restart supervisor: what happens to a task that ended on its own (status terminal while its desired
//! state is still at most Running). It applies the service's restart policy (condition, delay, max attempts
//! within a window, the attempts kept in the store's `RestartHistory` so a new leader honours them) and
//! says whether the slot gets a replacement now, later (the slot stays live meanwhile) or never.
//!
//! Must not: create the replacement itself (the orchestrator that owns the slot does, since it knows the
//! node), read a clock, or touch tasks that did not end on their own.

use std::time::Duration;

use super::set_desired;
use crate::manager::Plan;
use crate::model::{
    Meta, RestartCondition, RestartHistory, RestartKey, RestartPolicy, Service, Task, TaskState,
};
use crate::store::{ClusterState, Op};
use crate::util::Millis;

/// What became of a task that ended on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Supervised {
    /// Restarting: the old task is shut down and the restart recorded; the caller creates the replacement
    /// in the same plan.
    Replace,
    /// The restart delay is not over: nothing changes yet, the slot stays live, the plan requeues.
    Wait,
    /// Not restarted (condition, attempts, or nowhere to run): the old task is shut down for good.
    Ended,
    /// A job task that succeeded: its desired state becomes Complete.
    Succeeded,
}

/// Whether `task` ended on its own: its status is terminal while it is still meant to run.
pub fn ended_on_its_own(task: &Task) -> bool {
    task.status.state.is_terminal() && task.desired_state <= TaskState::Running
}

/// Whether `task` exited successfully (Complete with exit code 0 or none).
pub fn succeeded(task: &Task) -> bool {
    task.status.state == TaskState::Complete && task.status.exit_code.unwrap_or(0) == 0
}

/// Whether the task's end counts as a failure for `on-failure`.
fn failed(task: &Task) -> bool {
    matches!(
        task.status.state,
        TaskState::Failed | TaskState::Rejected | TaskState::Orphaned
    ) || task.status.exit_code.is_some_and(|c| c != 0)
}

fn millis(d: Duration) -> u64 {
    d.as_millis().min(u64::MAX as u128) as u64
}

/// Whether `policy` allows another restart given the recorded `history`.
pub fn attempts_left(
    policy: &RestartPolicy,
    history: Option<&RestartHistory>,
    now: Millis,
) -> bool {
    if policy.max_attempts == 0 {
        return true;
    }
    let since = if policy.window.is_zero() {
        0
    } else {
        now.saturating_sub(millis(policy.window))
    };
    let used = history.map_or(0, |h| h.count_since(since)) as u64;
    used < policy.max_attempts
}

/// The op that records a restart at `now` under `key`, pruning entries outside the window (and beyond the
/// last `max_attempts`, which is all the count needs). None when attempts are unlimited (nothing to count).
pub fn record(
    state: &ClusterState,
    key: RestartKey,
    policy: &RestartPolicy,
    now: Millis,
) -> Option<Op> {
    if policy.max_attempts == 0 {
        return None;
    }
    let since = if policy.window.is_zero() {
        0
    } else {
        now.saturating_sub(millis(policy.window))
    };
    let keep = policy.max_attempts.min(usize::MAX as u64) as usize;
    let existing = state.restart_history(&key);
    let mut restarts: Vec<u64> = existing
        .map(|h| h.restarts.iter().copied().filter(|t| *t >= since).collect())
        .unwrap_or_default();
    restarts.push(now);
    if restarts.len() > keep {
        restarts.drain(..restarts.len() - keep);
    }
    Some(match existing {
        Some(h) => Op::UpdateRestartHistory {
            history: RestartHistory {
                key,
                meta: h.meta,
                restarts,
            },
            expected_version: h.meta.version,
        },
        None => Op::CreateRestartHistory(RestartHistory {
            key,
            meta: Meta::default(),
            restarts,
        }),
    })
}

/// Whether the policy would restart `task` (ended on its own) now, were there somewhere to run it. Used to
/// tell a slot that ended for good (not refilled) from one whose task was stopped for another reason.
pub fn would_restart(
    state: &ClusterState,
    service: &Service,
    task: &Task,
    key: &RestartKey,
    now: Millis,
) -> bool {
    let policy = &service.spec.task.restart;
    let wanted = match policy.condition {
        RestartCondition::Any => true,
        RestartCondition::OnFailure => failed(task),
        RestartCondition::None => false,
    };
    wanted && attempts_left(policy, state.restart_history(key), now)
}

/// Decides the fate of `task`, which ended on its own, and pushes the ops for it into `plan` (except the
/// replacement, which the caller creates when this returns [`Supervised::Replace`]). `can_replace` is false
/// when the replacement would have nowhere to run (a global task's node became ineligible).
pub fn supervise(
    state: &ClusterState,
    service: &Service,
    task: &Task,
    key: RestartKey,
    now: Millis,
    can_replace: bool,
    plan: &mut Plan,
) -> Supervised {
    let policy = &service.spec.task.restart;
    if service.spec.mode.is_job() && succeeded(task) {
        plan.ops.push(set_desired(task, TaskState::Complete));
        return Supervised::Succeeded;
    }
    if !can_replace || !would_restart(state, service, task, &key, now) {
        plan.ops.push(set_desired(task, TaskState::Shutdown));
        return Supervised::Ended;
    }
    let due = task.status.timestamp.saturating_add(millis(policy.delay));
    if now < due {
        plan.requeue(Duration::from_millis(due - now));
        return Supervised::Wait;
    }
    plan.ops.push(set_desired(task, TaskState::Shutdown));
    plan.ops.extend(record(state, key, policy, now));
    Supervised::Replace
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manager::testutil::*;
    use crate::model::ServiceMode;

    fn policy(condition: RestartCondition, max_attempts: u64, window_s: u64) -> RestartPolicy {
        RestartPolicy {
            condition,
            delay: Duration::from_secs(5),
            max_attempts,
            window: Duration::from_secs(window_s),
        }
    }

    #[test]
    fn decisions() {
        use RestartCondition::*;
        use Supervised::*;
        let now = 1_000_000;
        let key = RestartKey::Slot {
            service_id: "s1".into(),
            slot: 1,
        };
        let history = |times: &[u64]| RestartHistory {
            key: key.clone(),
            meta: Meta::default(),
            restarts: times.to_vec(),
        };
        // (name, mode is job, policy, exit code, ended at, history, can replace, want)
        type Case<'a> = (
            &'a str,
            bool,
            RestartPolicy,
            i32,
            u64,
            Vec<u64>,
            bool,
            Supervised,
        );
        let cases: Vec<Case> = vec![
            (
                "any exit 0",
                false,
                policy(Any, 0, 0),
                0,
                0,
                vec![],
                true,
                Replace,
            ),
            (
                "any exit 1",
                false,
                policy(Any, 0, 0),
                1,
                0,
                vec![],
                true,
                Replace,
            ),
            (
                "on-failure exit 0",
                false,
                policy(OnFailure, 0, 0),
                0,
                0,
                vec![],
                true,
                Ended,
            ),
            (
                "on-failure exit 1",
                false,
                policy(OnFailure, 0, 0),
                1,
                0,
                vec![],
                true,
                Replace,
            ),
            (
                "none exit 1",
                false,
                policy(None, 0, 0),
                1,
                0,
                vec![],
                true,
                Ended,
            ),
            (
                "delay not due",
                false,
                policy(Any, 0, 0),
                1,
                now - 1000,
                vec![],
                true,
                Wait,
            ),
            (
                "delay due",
                false,
                policy(Any, 0, 0),
                1,
                now - 5000,
                vec![],
                true,
                Replace,
            ),
            (
                "nowhere to run",
                false,
                policy(Any, 0, 0),
                1,
                0,
                vec![],
                false,
                Ended,
            ),
            (
                "attempts left",
                false,
                policy(Any, 2, 60),
                1,
                0,
                vec![now - 10_000],
                true,
                Replace,
            ),
            (
                "attempts used in window",
                false,
                policy(Any, 2, 60),
                1,
                0,
                vec![now - 20_000, now - 10_000],
                true,
                Ended,
            ),
            (
                "old attempts outside window",
                false,
                policy(Any, 2, 60),
                1,
                0,
                vec![now - 120_000, now - 10_000],
                true,
                Replace,
            ),
            (
                "window 0 counts forever",
                false,
                policy(Any, 2, 0),
                1,
                0,
                vec![1, 2],
                true,
                Ended,
            ),
            (
                "job success",
                true,
                policy(Any, 0, 0),
                0,
                0,
                vec![],
                true,
                Succeeded,
            ),
            (
                "job failure",
                true,
                policy(OnFailure, 0, 0),
                1,
                0,
                vec![],
                true,
                Replace,
            ),
        ];
        for (name, job, policy, code, at, times, can_replace, want) in cases {
            let mode = if job {
                ServiceMode::ReplicatedJob {
                    max_concurrent: 1,
                    total_completions: 1,
                }
            } else {
                ServiceMode::Replicated { replicas: 1 }
            };
            let mut svc = service("s1", mode);
            svc.spec.task.restart = policy;
            let mut ops = vec![Op::CreateService(svc.clone())];
            if !times.is_empty() {
                ops.push(Op::CreateRestartHistory(history(&times)));
            }
            let w = World::with(ops);
            let t = exited("t1", "s1", 1, Some("n1"), code, at);
            let mut plan = Plan::new();
            let got = supervise(&w.state, &svc, &t, key.clone(), now, can_replace, &mut plan);
            assert_eq!(got, want, "{name}");
            match got {
                Wait => {
                    assert!(plan.ops.is_empty(), "{name}");
                    assert_eq!(plan.requeue_after, Some(Duration::from_secs(4)), "{name}");
                }
                Replace => assert_eq!(
                    plan.ops.len(),
                    1 + usize::from(svc.spec.task.restart.max_attempts > 0),
                    "{name}"
                ),
                Ended | Succeeded => assert_eq!(plan.ops.len(), 1, "{name}"),
            }
        }
    }

    #[test]
    fn record_prunes_outside_window() {
        let key = RestartKey::Slot {
            service_id: "s1".into(),
            slot: 1,
        };
        let now = 1_000_000;
        let w = World::with(vec![Op::CreateRestartHistory(RestartHistory {
            key: key.clone(),
            meta: Meta::default(),
            restarts: vec![now - 120_000, now - 10_000],
        })]);
        let op = record(&w.state, key, &policy(RestartCondition::Any, 3, 60), now);
        let Some(Op::UpdateRestartHistory { history, .. }) = op else {
            panic!("{op:?}")
        };
        assert_eq!(history.restarts, vec![now - 10_000, now]);
    }
}
