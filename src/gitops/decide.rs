//! The watcher's decision for one stack, a pure function of what the source holds, what the store records
//! and (once asked) the plan of a dry-run deploy: plan it, deploy it, write the record, or leave it.
//!
//! - A source revision marked Failed is never retried until the revision changes (the watcher never fights a
//!   rollback); an update of the applied revision that rolled back marks it Failed.
//! - A non-empty plan for a new revision is applied; for the revision already applied it is drift: reverted
//!   with self-heal, else recorded OutOfSync.
//! - A file that does not load marks its (existing) stack Failed with the problems; the stack is left running.
//!
//! Must not: do I/O or read a clock.

use crate::model::{Service, StackSource, SyncState};

/// What the source holds for a stack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Local {
    /// The files load: their revision.
    Loaded {
        /// Commit id or content hash.
        revision: String,
    },
    /// They do not load or validate.
    Broken {
        /// Commit id or content hash of the broken files.
        revision: String,
        /// The problems, one a line (file:line: key: message).
        error: String,
    },
}

impl Local {
    fn revision(&self) -> &str {
        match self {
            Local::Loaded { revision } | Local::Broken { revision, .. } => revision,
        }
    }
}

/// Everything the decision looks at.
#[derive(Clone, Debug)]
pub struct Input<'a> {
    /// This watcher's source (`dir:/srv/stacks`).
    pub source: &'a str,
    /// The stack's file or folder in it.
    pub path: &'a str,
    /// What the source holds.
    pub local: &'a Local,
    /// Whether the stack exists in the cluster.
    pub exists: bool,
    /// The stack's record in the store (any source's).
    pub stored: Option<&'a StackSource>,
    /// The stack's services as the store holds them.
    pub services: &'a [&'a Service],
    /// Revert drift (`--no-self-heal` clears it).
    pub self_heal: bool,
    /// Nothing of the stack changed since a dry run last found nothing to do (no need to ask again).
    pub unchanged_since_plan: bool,
}

/// What to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing.
    Nothing,
    /// Ask the cluster for the plan (a dry-run deploy), then decide again with it.
    Plan,
    /// Deploy the stack, writing this record in the same entry.
    Deploy {
        /// The record.
        record: StackSource,
        /// Why, for the log: `revision sha256:…` or `drift: …`.
        reason: String,
    },
    /// Write this record only.
    Record(StackSource),
}

/// The rollback of an update the watcher applied at or after `applied_at`: `service: message`.
pub fn rolled_back(services: &[&Service], applied_at: u64) -> Option<String> {
    services.iter().find_map(|s| {
        let u = s.update_status.as_ref()?;
        let by_hand = u.message.starts_with("manually requested");
        (u.state.is_rollback() && u.started_at >= applied_at && !by_hand)
            .then(|| format!("update of {} rolled back: {}", s.spec.name, u.message))
    })
}

fn same(a: &StackSource, b: &StackSource) -> bool {
    StackSource {
        updated_at: 0,
        ..a.clone()
    } == StackSource {
        updated_at: 0,
        ..b.clone()
    }
}

/// Decides for one stack; `plan` is the dry run's changes (one line each) once asked for (`Step::Plan`).
pub fn decide(input: &Input<'_>, plan: Option<&[String]>) -> Step {
    let revision = input.local.revision();
    let mine = input.stored.filter(|s| s.source == input.source);
    let record = |sync: SyncState, error: String| StackSource {
        source: input.source.to_string(),
        path: input.path.to_string(),
        revision: revision.to_string(),
        sync,
        error,
        applied_revision: mine.map(|m| m.applied_revision.clone()).unwrap_or_default(),
        applied_at: mine.map_or(0, |m| m.applied_at),
        updated_at: 0,
    };
    let write = |want: StackSource| match mine {
        Some(m) if same(m, &want) => Step::Nothing,
        _ => Step::Record(want),
    };
    if let Local::Broken { error, .. } = input.local {
        if !input.exists {
            return Step::Nothing;
        }
        return write(record(SyncState::Failed, error.clone()));
    }
    if let Some(m) = mine {
        if m.sync == SyncState::Failed && m.revision == revision {
            return Step::Nothing;
        }
        if m.applied_revision == revision {
            if let Some(why) = rolled_back(input.services, m.applied_at) {
                return write(record(SyncState::Failed, why));
            }
        }
    }
    let Some(changes) = plan else {
        let settled = mine.is_some_and(|m| m.revision == revision && m.sync == SyncState::Synced);
        return if settled && input.unchanged_since_plan && input.exists {
            Step::Nothing
        } else {
            Step::Plan
        };
    };
    if changes.is_empty() {
        return write(record(SyncState::Synced, String::new()));
    }
    let new_revision = mine.is_none_or(|m| m.revision != revision) || !input.exists;
    if new_revision || input.self_heal {
        let reason = if new_revision {
            format!("revision {}", short(revision))
        } else {
            format!("drift reverted: {}", changes.join("; "))
        };
        return Step::Deploy {
            record: record(SyncState::Synced, String::new()),
            reason,
        };
    }
    write(record(
        SyncState::OutOfSync,
        format!("changed in the cluster: {}", changes.join("; ")),
    ))
}

/// A revision as shown: a commit's or hash's first 12 characters (`sha256:` kept).
pub fn short(revision: &str) -> String {
    match revision.strip_prefix("sha256:") {
        Some(h) => format!("sha256:{}", &h[..h.len().min(12)]),
        None => revision[..revision.len().min(12)].to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manager::testutil::service;
    use crate::model::{ServiceMode, UpdateState, UpdateStatus};

    const SRC: &str = "dir:/srv/stacks";

    fn loaded(rev: &str) -> Local {
        Local::Loaded {
            revision: rev.into(),
        }
    }

    fn stored(rev: &str, sync: SyncState, applied: &str) -> StackSource {
        StackSource {
            source: SRC.into(),
            path: "web.yml".into(),
            revision: rev.into(),
            sync,
            error: String::new(),
            applied_revision: applied.into(),
            applied_at: 1000,
            updated_at: 5,
        }
    }

    fn input<'a>(
        local: &'a Local,
        stored: Option<&'a StackSource>,
        services: &'a [&'a Service],
    ) -> Input<'a> {
        Input {
            source: SRC,
            path: "web.yml",
            local,
            exists: stored.is_some(),
            stored,
            services,
            self_heal: true,
            unchanged_since_plan: false,
        }
    }

    fn changes() -> Vec<String> {
        vec!["update service web_web (replicas: 5 → 2)".to_string()]
    }

    #[test]
    fn a_new_stack_or_revision_is_planned_and_deployed() {
        let local = loaded("sha256:aa");
        let i = input(&local, None, &[]);
        assert_eq!(decide(&i, None), Step::Plan);
        match decide(&i, Some(&changes())) {
            Step::Deploy { record, reason } => {
                assert_eq!(record.sync, SyncState::Synced);
                assert_eq!(record.revision, "sha256:aa");
                assert_eq!(record.source, SRC);
                assert!(reason.starts_with("revision sha256:aa"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        // an edited file: a new revision is deployed even without self-heal
        let s = stored("sha256:old", SyncState::Synced, "sha256:old");
        let mut i = input(&local, Some(&s), &[]);
        i.self_heal = false;
        assert!(matches!(decide(&i, Some(&changes())), Step::Deploy { .. }));
    }

    #[test]
    fn drift_is_reverted_with_self_heal_and_reported_without() {
        let local = loaded("sha256:aa");
        let s = stored("sha256:aa", SyncState::Synced, "sha256:aa");
        let mut i = input(&local, Some(&s), &[]);
        // settled and nothing changed since the last empty plan: not even asked
        i.unchanged_since_plan = true;
        assert_eq!(decide(&i, None), Step::Nothing);
        i.unchanged_since_plan = false;
        assert_eq!(decide(&i, None), Step::Plan);
        assert_eq!(decide(&i, Some(&[])), Step::Nothing);
        match decide(&i, Some(&changes())) {
            Step::Deploy { reason, .. } => {
                assert!(reason.starts_with("drift reverted"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        i.self_heal = false;
        match decide(&i, Some(&changes())) {
            Step::Record(r) => {
                assert_eq!(r.sync, SyncState::OutOfSync);
                assert!(r.error.contains("replicas: 5 → 2"), "{}", r.error);
                assert_eq!(r.applied_at, 1000, "the applied time is kept");
            }
            other => panic!("{other:?}"),
        }
        // already recorded OutOfSync: nothing to write again; back in sync: Synced
        let out = StackSource {
            sync: SyncState::OutOfSync,
            error: "changed in the cluster: update service web_web (replicas: 5 → 2)".into(),
            ..s.clone()
        };
        let mut i = input(&local, Some(&out), &[]);
        i.self_heal = false;
        assert_eq!(decide(&i, Some(&changes())), Step::Nothing);
        assert!(
            matches!(decide(&i, Some(&[])), Step::Record(ref r) if r.sync == SyncState::Synced)
        );
    }

    #[test]
    fn a_rolled_back_revision_is_failed_and_not_retried_until_the_source_changes() {
        let mut web = service("web_web", ServiceMode::Replicated { replicas: 1 });
        web.update_status = Some(UpdateStatus {
            state: UpdateState::RollbackCompleted,
            started_at: 2000,
            completed_at: Some(3000),
            message: "update failed: task exited (1)".into(),
        });
        let services = [&web];
        let local = loaded("sha256:bad");
        let s = stored("sha256:bad", SyncState::Synced, "sha256:bad");
        let i = input(&local, Some(&s), &services);
        let failed = match decide(&i, None) {
            Step::Record(r) => r,
            other => panic!("{other:?}"),
        };
        assert_eq!(failed.sync, SyncState::Failed);
        assert!(
            failed.error.contains("rolled back: update failed"),
            "{}",
            failed.error
        );
        // marked Failed: the plan (the rollback's spec differs from the file) is never applied
        let i = input(&local, Some(&failed), &services);
        assert_eq!(decide(&i, None), Step::Nothing);
        assert_eq!(decide(&i, Some(&changes())), Step::Nothing);
        // the file changes: a new revision, deployed
        let fixed = loaded("sha256:fixed");
        let i = input(&fixed, Some(&failed), &services);
        assert_eq!(decide(&i, None), Step::Plan);
        assert!(matches!(decide(&i, Some(&changes())), Step::Deploy { .. }));
        // a rollback from before the watcher applied, or one asked for by hand, is not this revision's failure
        let earlier = StackSource {
            applied_at: 5000,
            ..s.clone()
        };
        assert_eq!(
            decide(&input(&local, Some(&earlier), &services), None),
            Step::Plan
        );
        web.update_status.as_mut().unwrap().message = "manually requested rollback".into();
        let services = [&web];
        assert_eq!(
            decide(&input(&local, Some(&s), &services), None),
            Step::Plan
        );
    }

    #[test]
    fn a_broken_file_marks_an_existing_stack_failed_and_leaves_it() {
        let broken = Local::Broken {
            revision: "sha256:br".into(),
            error: "web.yml:5:17: services.web.deploy.replicas: expected a number".into(),
        };
        assert_eq!(decide(&input(&broken, None, &[]), None), Step::Nothing);
        let s = stored("sha256:aa", SyncState::Synced, "sha256:aa");
        match decide(&input(&broken, Some(&s), &[]), None) {
            Step::Record(r) => {
                assert_eq!(r.sync, SyncState::Failed);
                assert_eq!(r.revision, "sha256:br");
                assert!(r.error.contains("web.yml:5"));
                assert_eq!(r.applied_revision, "sha256:aa");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_stack_of_another_source_or_by_hand_is_adopted_as_a_new_revision() {
        let local = loaded("sha256:aa");
        let other = StackSource {
            source: "dir:/elsewhere".into(),
            ..stored("sha256:aa", SyncState::Synced, "sha256:aa")
        };
        let mut i = input(&local, Some(&other), &[]);
        i.self_heal = false;
        assert!(matches!(decide(&i, Some(&changes())), Step::Deploy { .. }));
        assert!(matches!(decide(&i, Some(&[])), Step::Record(ref r) if r.source == SRC));
        assert_eq!(short("sha256:0123456789abcdef"), "sha256:0123456789ab");
        assert_eq!(short("0123456789abcdef0123"), "0123456789ab");
    }
}
