//! Stack requests: deploy (with dry run), history, rollback to a kept revision, ls, rm. The planning is
//! `deploy::plan_deploy`; here secrets are sealed before they reach the log and revisions are looked up.
//!
//! Must not: return the stored specs of revisions (they hold sealed secrets), or change the store but by proposal.

use super::error::{decode, ApiError};
use super::{json_objects, ControlApi};
use crate::api::control;
use crate::api::to_json;
use crate::manager::deploy::{plan_deploy, plan_remove_stack, DeployPlan, PreparedObject};
use crate::model::{self, FileObjectSpec, SecretData, StackSpec};
use crate::store::Op;

/// Tells whether an existing object holds the same data as the one being deployed.
type SameCheck = Box<dyn Fn(&FileObjectSpec) -> bool>;

/// A stack as shown to users: the stored specs of its revisions are left out.
fn public_stack(stack: &model::Stack) -> model::Stack {
    let mut s = stack.clone();
    for r in &mut s.history {
        r.spec_json = String::new();
    }
    s
}

fn no_stack(name: &str) -> ApiError {
    ApiError::NotFound(format!("nothing found in stack: {name}"))
}

impl ControlApi {
    /// Plans a deploy (synchronous: the comparison closures never cross an await).
    fn plan_deploy(
        &self,
        spec: &StackSpec,
        files: Vec<(String, String)>,
        prune: bool,
    ) -> Result<DeployPlan, ApiError> {
        let key = self.key.clone();
        // Seal secret data before it goes anywhere near the log; compare with existing objects by plaintext.
        let sealed: Vec<(FileObjectSpec, Vec<u8>)> = spec
            .secrets
            .iter()
            .map(|s| {
                let mut sealed = s.clone();
                sealed.data = SecretData(key.seal(&s.data.0));
                (sealed, s.data.0.clone())
            })
            .collect();
        let secret_same: Vec<SameCheck> = sealed
            .iter()
            .map(|(_, plain)| {
                let key = key.clone();
                let plain = plain.clone();
                Box::new(move |existing: &FileObjectSpec| {
                    key.open(&existing.data.0).is_ok_and(|d| d == plain)
                }) as SameCheck
            })
            .collect();
        let secrets: Vec<PreparedObject> = sealed
            .iter()
            .zip(&secret_same)
            .map(|((spec, _), same)| PreparedObject {
                spec: spec.clone(),
                same_as: same.as_ref(),
            })
            .collect();
        let config_same: Vec<SameCheck> = spec
            .configs
            .iter()
            .map(|c| {
                let data = c.data.clone();
                Box::new(move |existing: &FileObjectSpec| existing.data == data) as SameCheck
            })
            .collect();
        let configs: Vec<PreparedObject> = spec
            .configs
            .iter()
            .zip(&config_same)
            .map(|(c, same)| PreparedObject {
                spec: c.clone(),
                same_as: same.as_ref(),
            })
            .collect();
        let now = self.now();
        let mut ids = self.ids();
        self.store
            .view(|state| {
                plan_deploy(
                    state,
                    spec,
                    &secrets,
                    &configs,
                    files,
                    prune,
                    now,
                    ids.as_mut(),
                )
            })
            .map_err(ApiError::from)
    }

    /// Plans a deploy of `spec`; applies it unless `dry_run`. With a watcher's `source`, the record is written
    /// on the stack in the same entry (applied now, at the revision it names), or alone when nothing else changes.
    async fn deploy(
        &self,
        spec: StackSpec,
        files: Vec<(String, String)>,
        prune: bool,
        dry_run: bool,
        source: Option<model::StackSource>,
    ) -> Result<control::DeployStackResponse, ApiError> {
        crate::stack::convert::check_stack_name(&spec.name).map_err(ApiError::Invalid)?;
        let mut plan = self.plan_deploy(&spec, files, prune)?;
        if let Some(mut source) = source.filter(|_| !dry_run) {
            let now = self.now();
            source.updated_at = now;
            if plan.ops.is_empty() {
                // nothing to deploy: the record alone (the revision seen, the sync state)
                let existing = self.store.view(|s| s.stack(&spec.name).cloned());
                if let Some(old) = existing {
                    let mut stack = old.clone();
                    let kept = old.source.as_ref();
                    source.applied_at = kept.map_or(0, |k| k.applied_at);
                    source.applied_revision =
                        kept.map(|k| k.applied_revision.clone()).unwrap_or_default();
                    stack.source = Some(source);
                    plan.ops.push(Op::UpdateStack {
                        stack,
                        expected_version: old.meta.version,
                    });
                }
            } else {
                source.applied_at = now;
                source.applied_revision = source.revision.clone();
                for op in plan.ops.iter_mut() {
                    if let Op::CreateStack(stack) | Op::UpdateStack { stack, .. } = op {
                        stack.source = Some(source.clone());
                    }
                }
            }
        }
        let changes = plan.changes();
        let changed_services = plan
            .items
            .iter()
            .filter(|i| {
                i.kind == model::PlanKind::Service
                    && matches!(
                        i.action,
                        model::PlanAction::Create | model::PlanAction::Update
                    )
            })
            .map(|i| i.name.clone())
            .collect();
        let plan_json = serde_json::to_string(&plan.items).unwrap_or_default();
        let revision = if dry_run {
            0
        } else {
            plan.revision.unwrap_or(0)
        };
        if !dry_run {
            self.propose(plan.ops).await?;
        }
        let stack = self.store.view(|s| s.stack(&spec.name).cloned());
        Ok(control::DeployStackResponse {
            stack_json: stack
                .map(|s| to_json(&public_stack(&s)))
                .unwrap_or_default(),
            changes,
            plan_json,
            revision,
            changed_services,
        })
    }
}

/// `stack deploy`.
pub async fn deploy(
    api: &ControlApi,
    req: control::DeployStackRequest,
) -> Result<control::DeployStackResponse, ApiError> {
    let spec: StackSpec = decode("stack spec", &req.spec_json)?;
    let files: Vec<(String, String)> = req.files.into_iter().map(|f| (f.name, f.text)).collect();
    let source = if req.source_json.is_empty() {
        None
    } else {
        Some(decode("stack source", &req.source_json)?)
    };
    api.deploy(spec, files, req.prune, req.dry_run, source)
        .await
}

/// `RecordStackSource`: a watcher's record (sync state, revision seen, last error) written on an existing stack.
pub async fn record_source(
    api: &ControlApi,
    req: control::RecordStackSourceRequest,
) -> Result<control::JsonObject, ApiError> {
    let mut source: model::StackSource = decode("stack source", &req.source_json)?;
    let old = api
        .store
        .view(|s| s.stack(&req.name).cloned())
        .ok_or_else(|| no_stack(&req.name))?;
    source.updated_at = api.now();
    let mut stack = old.clone();
    stack.source = Some(source);
    api.propose(vec![Op::UpdateStack {
        stack: stack.clone(),
        expected_version: old.meta.version,
    }])
    .await?;
    Ok(control::JsonObject {
        json: to_json(&public_stack(&stack)),
    })
}

/// `stack history`: the kept revisions, without their specs.
pub fn history(api: &ControlApi, name: &str) -> Result<control::JsonObjects, ApiError> {
    let stack = api
        .store
        .view(|s| s.stack(name).cloned())
        .ok_or_else(|| no_stack(name))?;
    Ok(json_objects(stack.history.into_iter().map(|mut r| {
        r.spec_json = String::new();
        r
    })))
}

/// The kept revision `wanted` of `stack`, or why there is none.
fn kept_revision(stack: &model::Stack, wanted: u64) -> Result<&model::StackRevision, ApiError> {
    stack
        .history
        .iter()
        .find(|r| r.revision == wanted)
        .ok_or_else(|| {
            let kept: Vec<String> = stack
                .history
                .iter()
                .map(|r| r.revision.to_string())
                .collect();
            ApiError::NotFound(format!(
                "stack {} has no revision {wanted} (kept: {})",
                stack.name,
                if kept.is_empty() {
                    "none".into()
                } else {
                    kept.join(", ")
                }
            ))
        })
}

/// `stack rollback`: deploys a kept revision again (revision 0: the one before the current).
pub async fn rollback(
    api: &ControlApi,
    req: control::RollbackStackRequest,
) -> Result<control::DeployStackResponse, ApiError> {
    let stack = api
        .store
        .view(|s| s.stack(&req.name).cloned())
        .ok_or_else(|| no_stack(&req.name))?;
    let wanted = if req.revision == 0 {
        stack.revision.saturating_sub(1)
    } else {
        req.revision
    };
    let rev = kept_revision(&stack, wanted)?.clone();
    let mut spec: StackSpec = decode("stored stack spec", &rev.spec_json)?;
    for s in spec.secrets.iter_mut() {
        let plain = api.key.open(&s.data.0).map_err(|e| {
            ApiError::Precondition(format!(
                "cannot open secret {} of revision {wanted}: {e}",
                s.name
            ))
        })?;
        s.data = SecretData(plain);
    }
    api.deploy(spec, rev.files, rev.prune, req.dry_run, None)
        .await
}

/// `stack ls`.
pub fn list(api: &ControlApi) -> control::JsonObjects {
    api.store
        .view(|s| json_objects(s.stacks().map(public_stack)))
}

/// `stack rm`: one line per removed object.
pub async fn remove(api: &ControlApi, name: &str) -> Result<control::JsonObjects, ApiError> {
    let plan = api
        .store
        .view(|s| plan_remove_stack(s, name))
        .ok_or_else(|| no_stack(name))?;
    api.propose(plan.ops).await?;
    let lines = plan
        .items
        .iter()
        .map(|i| format!("Removing {} {}", i.kind, i.name))
        .collect();
    Ok(control::JsonObjects { json: lines })
}
