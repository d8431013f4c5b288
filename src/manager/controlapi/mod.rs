//! The control API server (what `swarmctl` calls): reads come from the local store, writes are planned here and
//! proposed through Raft as one batch each. Invariant 2: writes are only accepted on the leader.
//!
//! Must not: change the store without a proposal, or return secret data (secret reads never include it).

mod objects;
mod update;

use std::pin::Pin;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use futures::Stream;
use tonic::{Request, Response, Status};

use crate::api::control::{self, control_server::Control};
use crate::api::{from_json, to_json};
use crate::manager::deploy::{manual_rollback, plan_deploy, plan_remove_stack, PreparedObject};
use crate::manager::proposer::{ProposeError, Proposer};
use crate::model::{self, FileObjectSpec, SecretData, StackSpec};
use crate::secrets::DataKey;
use crate::store::{ClusterState, Op, Store};
use crate::util::{IdSource, RandomIds};

pub use objects::{resolve_node, resolve_secret, resolve_service};

/// Tells whether an existing object holds the same data as the one being deployed.
type SameCheck = Box<dyn Fn(&FileObjectSpec) -> bool>;

/// One line of a task's output, for `service logs`.
#[derive(Clone, Debug)]
pub struct TaskLogLine {
    /// "stdout" or "stderr".
    pub stream: String,
    /// The text, without newline.
    pub line: String,
}

/// A stream of log lines.
pub type TaskLogStream = Pin<Box<dyn Stream<Item = TaskLogLine> + Send>>;

/// Where task logs are read from (the node's executor; for now the local node only).
pub trait TaskLogs: Send + Sync + 'static {
    /// The lines of `task_id`; `tail` = last N lines only; `follow` = keep streaming until the task ends.
    fn logs(
        &self,
        task_id: String,
        tail: Option<usize>,
        follow: bool,
    ) -> BoxFuture<'static, Result<TaskLogStream, String>>;
}

/// The control API service.
pub struct ControlApi {
    store: Store,
    proposer: Proposer,
    key: DataKey,
    ids: Mutex<Box<dyn IdSource + Send>>,
    logs: Arc<dyn TaskLogs>,
    info: Arc<dyn Fn() -> serde_json::Value + Send + Sync>,
}

impl ControlApi {
    /// A control API over this node's store and proposer.
    pub fn new(
        store: Store,
        proposer: Proposer,
        key: DataKey,
        logs: Arc<dyn TaskLogs>,
        info: Arc<dyn Fn() -> serde_json::Value + Send + Sync>,
    ) -> Self {
        ControlApi {
            store,
            proposer,
            key,
            ids: Mutex::new(Box::new(RandomIds)),
            logs,
            info,
        }
    }

    fn ids(&self) -> std::sync::MutexGuard<'_, Box<dyn IdSource + Send>> {
        self.ids.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn propose(&self, ops: Vec<Op>) -> Result<(), Status> {
        if ops.is_empty() {
            return Ok(());
        }
        self.proposer
            .propose(ops)
            .await
            .map(|_| ())
            .map_err(propose_status)
    }

    fn now(&self) -> u64 {
        self.proposer.clock().now()
    }

    /// Plans a deploy (synchronous: the comparison closures never cross an await).
    fn plan_deploy(
        &self,
        spec: &StackSpec,
        files: Vec<(String, String)>,
        prune: bool,
    ) -> Result<crate::manager::deploy::DeployPlan, Status> {
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
            .map_err(|e| Status::failed_precondition(e.to_string()))
    }
}

impl ControlApi {
    /// Plans a deploy of `spec`; applies it unless `dry_run`.
    async fn deploy(
        &self,
        spec: StackSpec,
        files: Vec<(String, String)>,
        prune: bool,
        dry_run: bool,
    ) -> Result<control::DeployStackResponse, Status> {
        crate::stack::convert::check_stack_name(&spec.name).map_err(Status::invalid_argument)?;
        let plan = self.plan_deploy(&spec, files, prune)?;
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

fn propose_status(e: ProposeError) -> Status {
    match e {
        ProposeError::Rejected(r) => Status::aborted(format!(
            "the change conflicted with another one, try again: {r}"
        )),
        ProposeError::NotLeader { .. } => Status::unavailable(e.to_string()),
        ProposeError::Raft(m) => Status::unavailable(m),
    }
}

fn objects<T: serde::Serialize>(items: impl Iterator<Item = T>) -> Response<control::JsonObjects> {
    Response::new(control::JsonObjects {
        json: items.map(|i| to_json(&i)).collect(),
    })
}

/// A stack as shown to users: the stored specs of its revisions are left out.
fn public_stack(stack: &model::Stack) -> model::Stack {
    let mut s = stack.clone();
    for r in &mut s.history {
        r.spec_json = String::new();
    }
    s
}

/// A secret as shown to users: everything but the data.
fn redact(secret: &model::Secret) -> model::Secret {
    let mut s = secret.clone();
    s.spec.data = SecretData(Vec::new());
    s
}

fn tasks_filtered(
    state: &ClusterState,
    filter: &control::TaskFilter,
) -> Result<Vec<model::Task>, Status> {
    let service_id = if filter.service.is_empty() {
        None
    } else {
        Some(resolve_service(state, &filter.service)?.id.clone())
    };
    let node_id = if filter.node.is_empty() {
        None
    } else {
        Some(resolve_node(state, &filter.node)?.id.clone())
    };
    let stack_services: Option<Vec<String>> = if filter.stack.is_empty() {
        None
    } else {
        if state.stack(&filter.stack).is_none() {
            return Err(Status::not_found(format!(
                "nothing found in stack: {}",
                filter.stack
            )));
        }
        Some(
            state
                .services()
                .filter(|s| s.spec.labels.get(model::STACK_NAMESPACE_LABEL) == Some(&filter.stack))
                .map(|s| s.id.clone())
                .collect(),
        )
    };
    Ok(state
        .tasks()
        .filter(|t| service_id.as_ref().is_none_or(|id| &t.service_id == id))
        .filter(|t| {
            node_id
                .as_ref()
                .is_none_or(|id| t.node_id.as_ref() == Some(id))
        })
        .filter(|t| {
            stack_services
                .as_ref()
                .is_none_or(|ids| ids.contains(&t.service_id))
        })
        .cloned()
        .collect())
}

#[tonic::async_trait]
impl Control for ControlApi {
    async fn deploy_stack(
        &self,
        request: Request<control::DeployStackRequest>,
    ) -> Result<Response<control::DeployStackResponse>, Status> {
        let req = request.into_inner();
        let spec: StackSpec = from_json("stack spec", &req.spec_json)?;
        let files: Vec<(String, String)> =
            req.files.into_iter().map(|f| (f.name, f.text)).collect();
        self.deploy(spec, files, req.prune, req.dry_run)
            .await
            .map(Response::new)
    }

    async fn stack_history(
        &self,
        request: Request<control::ObjectRef>,
    ) -> Result<Response<control::JsonObjects>, Status> {
        let name = request.into_inner().id_or_name;
        let stack = self
            .store
            .view(|s| s.stack(&name).cloned())
            .ok_or_else(|| Status::not_found(format!("nothing found in stack: {name}")))?;
        Ok(objects(stack.history.into_iter().map(|mut r| {
            r.spec_json = String::new();
            r
        })))
    }

    async fn rollback_stack(
        &self,
        request: Request<control::RollbackStackRequest>,
    ) -> Result<Response<control::DeployStackResponse>, Status> {
        let req = request.into_inner();
        let stack = self
            .store
            .view(|s| s.stack(&req.name).cloned())
            .ok_or_else(|| Status::not_found(format!("nothing found in stack: {}", req.name)))?;
        let wanted = if req.revision == 0 {
            stack.revision.saturating_sub(1)
        } else {
            req.revision
        };
        let rev = stack
            .history
            .iter()
            .find(|r| r.revision == wanted)
            .ok_or_else(|| {
                let kept: Vec<String> = stack
                    .history
                    .iter()
                    .map(|r| r.revision.to_string())
                    .collect();
                Status::not_found(format!(
                    "stack {} has no revision {wanted} (kept: {})",
                    req.name,
                    if kept.is_empty() {
                        "none".into()
                    } else {
                        kept.join(", ")
                    }
                ))
            })?
            .clone();
        let mut spec: StackSpec = from_json("stored stack spec", &rev.spec_json)?;
        for s in spec.secrets.iter_mut() {
            let plain = self.key.open(&s.data.0).map_err(|e| {
                Status::failed_precondition(format!(
                    "cannot open secret {} of revision {wanted}: {e}",
                    s.name
                ))
            })?;
            s.data = SecretData(plain);
        }
        self.deploy(spec, rev.files, rev.prune, req.dry_run)
            .await
            .map(Response::new)
    }

    async fn list_stacks(
        &self,
        _: Request<control::Empty>,
    ) -> Result<Response<control::JsonObjects>, Status> {
        Ok(self.store.view(|s| objects(s.stacks().map(public_stack))))
    }

    async fn remove_stack(
        &self,
        request: Request<control::ObjectRef>,
    ) -> Result<Response<control::JsonObjects>, Status> {
        let name = request.into_inner().id_or_name;
        let plan = self
            .store
            .view(|s| plan_remove_stack(s, &name))
            .ok_or_else(|| Status::not_found(format!("nothing found in stack: {name}")))?;
        self.propose(plan.ops).await?;
        let lines = plan
            .items
            .iter()
            .map(|i| format!("Removing {} {}", i.kind, i.name))
            .collect();
        Ok(Response::new(control::JsonObjects { json: lines }))
    }

    async fn list_services(
        &self,
        request: Request<control::ServiceFilter>,
    ) -> Result<Response<control::JsonObjects>, Status> {
        let stack = request.into_inner().stack;
        Ok(self.store.view(|s| {
            objects(
                s.services()
                    .filter(|svc| {
                        stack.is_empty()
                            || svc.spec.labels.get(model::STACK_NAMESPACE_LABEL) == Some(&stack)
                    })
                    .cloned(),
            )
        }))
    }

    async fn get_service(
        &self,
        request: Request<control::ObjectRef>,
    ) -> Result<Response<control::JsonObject>, Status> {
        let key = request.into_inner().id_or_name;
        let svc = self.store.view(|s| resolve_service(s, &key).cloned())?;
        Ok(Response::new(control::JsonObject {
            json: to_json(&svc),
        }))
    }

    async fn scale_service(
        &self,
        request: Request<control::ScaleRequest>,
    ) -> Result<Response<control::JsonObject>, Status> {
        let req = request.into_inner();
        let svc = self
            .store
            .view(|s| resolve_service(s, &req.service).cloned())?;
        let mut updated = svc.clone();
        match &mut updated.spec.mode {
            model::ServiceMode::Replicated { replicas } => *replicas = req.replicas,
            model::ServiceMode::ReplicatedJob {
                max_concurrent,
                total_completions,
            } => {
                *max_concurrent = req.replicas;
                *total_completions = (*total_completions).max(req.replicas);
            }
            other => {
                return Err(Status::failed_precondition(format!(
                "{}: scale can only be used with replicated or replicated-job mode (service is {})",
                svc.spec.name,
                other.name()
            )))
            }
        }
        if updated.spec != svc.spec {
            self.propose(vec![Op::UpdateService {
                service: updated,
                expected_version: svc.meta.version,
            }])
            .await?;
        }
        let svc = self.store.view(|s| s.service(&svc.id).cloned());
        Ok(Response::new(control::JsonObject {
            json: svc.map(|s| to_json(&s)).unwrap_or_default(),
        }))
    }

    async fn remove_service(
        &self,
        request: Request<control::ObjectRef>,
    ) -> Result<Response<control::Empty>, Status> {
        let key = request.into_inner().id_or_name;
        let svc = self.store.view(|s| resolve_service(s, &key).cloned())?;
        self.propose(vec![Op::DeleteService {
            id: svc.id,
            expected_version: svc.meta.version,
        }])
        .await?;
        Ok(Response::new(control::Empty {}))
    }

    async fn update_service(
        &self,
        request: Request<control::ServiceUpdateRequest>,
    ) -> Result<Response<control::ServiceUpdateResponse>, Status> {
        let req = request.into_inner();
        let svc = self
            .store
            .view(|s| resolve_service(s, &req.service).cloned())?;
        let spec = update::apply_flags(&svc.spec, &req).map_err(Status::invalid_argument)?;
        let mut changes = Vec::new();
        if let Some((op, fields)) = crate::manager::deploy::update_service(&svc, spec, self.now()) {
            self.propose(vec![op]).await?;
            changes = fields;
        }
        let svc = self.store.view(|s| s.service(&svc.id).cloned());
        Ok(Response::new(control::ServiceUpdateResponse {
            service_json: svc.map(|s| to_json(&s)).unwrap_or_default(),
            changes,
        }))
    }

    async fn rollback_service(
        &self,
        request: Request<control::ObjectRef>,
    ) -> Result<Response<control::ServiceUpdateResponse>, Status> {
        let key = request.into_inner().id_or_name;
        let svc = self.store.view(|s| resolve_service(s, &key).cloned())?;
        let op = manual_rollback(&svc, self.now()).ok_or_else(|| {
            Status::failed_precondition(format!(
                "service {} has no previous spec to roll back to",
                svc.spec.name
            ))
        })?;
        let fields = match (&op, &svc) {
            (Op::UpdateService { service, .. }, old) => {
                crate::manager::specdiff::service_fields(&old.spec, &service.spec)
            }
            _ => Vec::new(),
        };
        self.propose(vec![op]).await?;
        let svc = self.store.view(|s| s.service(&svc.id).cloned());
        Ok(Response::new(control::ServiceUpdateResponse {
            service_json: svc.map(|s| to_json(&s)).unwrap_or_default(),
            changes: fields,
        }))
    }

    type ServiceLogsStream = Pin<Box<dyn Stream<Item = Result<control::LogLine, Status>> + Send>>;

    async fn service_logs(
        &self,
        request: Request<control::LogsRequest>,
    ) -> Result<Response<Self::ServiceLogsStream>, Status> {
        let req = request.into_inner();
        let (svc, mut tasks) = self.store.view(|s| {
            let svc = resolve_service(s, &req.service).cloned()?;
            let tasks: Vec<model::Task> = s
                .tasks_of_service(&svc.id)
                .filter(|t| t.node_id.is_some())
                .cloned()
                .collect();
            Ok::<_, Status>((svc, tasks))
        })?;
        tasks.sort_by_key(|t| (t.slot, t.meta.created_at));
        let tail = (req.tail > 0).then_some(req.tail as usize);
        let mut streams = Vec::new();
        for t in tasks {
            let name = t.name(&svc.spec.name);
            let follow = req.follow && !t.status.state.is_terminal();
            match self.logs.logs(t.id.clone(), tail, follow).await {
                Ok(stream) => {
                    use futures::StreamExt;
                    let name = name.clone();
                    streams.push(stream.map(move |l| {
                        Ok(control::LogLine {
                            task_name: name.clone(),
                            stream: l.stream,
                            line: l.line,
                        })
                    }));
                }
                Err(e) => tracing::debug!(task = %t.id, "no logs: {e}"),
            }
        }
        let merged = futures::stream::select_all(streams);
        Ok(Response::new(Box::pin(merged)))
    }

    async fn list_tasks(
        &self,
        request: Request<control::TaskFilter>,
    ) -> Result<Response<control::JsonObjects>, Status> {
        let filter = request.into_inner();
        let tasks = self.store.view(|s| tasks_filtered(s, &filter))?;
        Ok(objects(tasks.into_iter()))
    }

    async fn list_nodes(
        &self,
        _: Request<control::Empty>,
    ) -> Result<Response<control::JsonObjects>, Status> {
        Ok(self.store.view(|s| objects(s.nodes().cloned())))
    }

    async fn get_node(
        &self,
        request: Request<control::ObjectRef>,
    ) -> Result<Response<control::JsonObject>, Status> {
        let key = request.into_inner().id_or_name;
        let node = self.store.view(|s| resolve_node(s, &key).cloned())?;
        Ok(Response::new(control::JsonObject {
            json: to_json(&node),
        }))
    }

    async fn update_node(
        &self,
        request: Request<control::NodeUpdateRequest>,
    ) -> Result<Response<control::JsonObject>, Status> {
        let req = request.into_inner();
        let node = self.store.view(|s| resolve_node(s, &req.node).cloned())?;
        let mut updated = node.clone();
        if !req.availability.is_empty() {
            updated.spec.availability = match req.availability.as_str() {
                "active" => model::NodeAvailability::Active,
                "pause" => model::NodeAvailability::Pause,
                "drain" => model::NodeAvailability::Drain,
                other => {
                    return Err(Status::invalid_argument(format!(
                        "invalid availability {other:?}: use active, pause or drain"
                    )))
                }
            };
        }
        for k in &req.label_rm {
            if updated.spec.labels.remove(k).is_none() {
                return Err(Status::not_found(format!(
                    "key {k} doesn't exist in node's labels"
                )));
            }
        }
        updated.spec.labels.extend(req.label_add.clone());
        if updated != node {
            self.propose(vec![Op::UpdateNode {
                node: updated,
                expected_version: node.meta.version,
            }])
            .await?;
        }
        let node = self.store.view(|s| s.node(&node.id).cloned());
        Ok(Response::new(control::JsonObject {
            json: node.map(|n| to_json(&n)).unwrap_or_default(),
        }))
    }

    async fn create_secret(
        &self,
        request: Request<control::CreateSecretRequest>,
    ) -> Result<Response<control::JsonObject>, Status> {
        let req = request.into_inner();
        objects::check_object_name(&req.name).map_err(Status::invalid_argument)?;
        if req.data.is_empty() {
            return Err(Status::invalid_argument("secret data is empty"));
        }
        if req.data.len() > 500 * 1024 {
            return Err(Status::invalid_argument(
                "secret data is larger than 500 KiB",
            ));
        }
        if self
            .store
            .view(|s| s.secrets().any(|x| x.spec.name == req.name))
        // any version of the name
        {
            return Err(Status::already_exists(format!(
                "secret {} already exists",
                req.name
            )));
        }
        let id = self.ids().next_id();
        let secret = model::Secret {
            id: id.clone(),
            meta: model::Meta::default(),
            spec: FileObjectSpec {
                name: req.name,
                labels: req.labels.into_iter().collect(),
                data: SecretData(self.key.seal(&req.data)),
            },
        };
        self.propose(vec![Op::CreateSecret(secret)]).await?;
        let s = self.store.view(|s| s.secret(&id).map(redact));
        Ok(Response::new(control::JsonObject {
            json: s.map(|s| to_json(&s)).unwrap_or_default(),
        }))
    }

    async fn list_secrets(
        &self,
        _: Request<control::Empty>,
    ) -> Result<Response<control::JsonObjects>, Status> {
        Ok(self.store.view(|s| objects(s.secrets().map(redact))))
    }

    async fn get_secret(
        &self,
        request: Request<control::ObjectRef>,
    ) -> Result<Response<control::JsonObject>, Status> {
        let key = request.into_inner().id_or_name;
        let secret = self.store.view(|s| resolve_secret(s, &key).map(redact))?;
        Ok(Response::new(control::JsonObject {
            json: to_json(&secret),
        }))
    }

    async fn remove_secret(
        &self,
        request: Request<control::ObjectRef>,
    ) -> Result<Response<control::Empty>, Status> {
        let key = request.into_inner().id_or_name;
        let (secret, users) = self.store.view(|s| {
            let secret = resolve_secret(s, &key).cloned()?;
            let users: Vec<String> = s
                .services()
                .filter(|svc| {
                    svc.spec
                        .task
                        .container
                        .secrets
                        .iter()
                        .any(|r| r.id == secret.id || r.name == secret.spec.name)
                })
                .map(|svc| svc.spec.name.clone())
                .collect();
            Ok::<_, Status>((secret, users))
        })?;
        if !users.is_empty() {
            return Err(Status::failed_precondition(format!(
                "secret '{}' is in use by the following service{}: {}",
                secret.spec.name,
                if users.len() > 1 { "s" } else { "" },
                users.join(", ")
            )));
        }
        self.propose(vec![Op::DeleteSecret {
            id: secret.id,
            expected_version: secret.meta.version,
        }])
        .await?;
        Ok(Response::new(control::Empty {}))
    }

    async fn info(
        &self,
        _: Request<control::Empty>,
    ) -> Result<Response<control::InfoResponse>, Status> {
        Ok(Response::new(control::InfoResponse {
            json: (self.info)().to_string(),
        }))
    }
}
