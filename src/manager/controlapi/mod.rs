//! The control API server (what `swarmctl` calls): reads come from the local store, writes are planned here and
//! proposed through Raft as one batch each. Invariant 2: writes are only accepted on the leader.
//!
//! One child per kind of object (`stack`, `service`, `node`, `secret`, `network`, `task`, `logs`, `cluster`) holds its handlers; the
//! rules they enforce live in the manager's pure modules (`rules`, `usage`, `deploy`). Handlers return
//! [`ApiError`]; this file only dispatches and turns errors into `tonic::Status` (with `?`, through
//! `From<ApiError>`).
//!
//! Must not: change the store without a proposal, or return secret data (secret reads never include it).

mod ca;
mod cluster;
mod error;
mod lock;
mod logs;
mod network;
mod node;
mod objects;
mod secret;
mod service;
mod stack;
mod task;
mod update;

use std::pin::Pin;
use std::sync::{Arc, Mutex};

use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use crate::api::control::{self, control_server::Control};
use crate::api::to_json;
use crate::manager::proposer::Proposer;
use crate::secrets::DataKey;
use crate::store::{Op, Store};
use crate::util::{IdSource, RandomIds};

pub use cluster::{open_tokens, seal_tokens};
pub use error::ApiError;
pub use lock::open_unlock_key;
pub use logs::{TaskLogLine, TaskLogStream, TaskLogs};
pub use objects::{resolve_network, resolve_node, resolve_secret, resolve_service};

/// The control API service.
pub struct ControlApi {
    store: Store,
    proposer: Proposer,
    key: DataKey,
    ids: Mutex<Box<dyn IdSource + Send>>,
    logs: Arc<dyn TaskLogs>,
    info: Arc<dyn Fn() -> serde_json::Value + Send + Sync>,
    /// The address joining nodes dial (shown by `swarm join-token`).
    join_addr: String,
    /// The cluster's CA, for `swarm ca` (`--issue-client`, `--rotate`).
    ca: Option<crate::pki::SharedAuthority>,
    /// The unlock key this manager's key files are wrapped with now (autolock).
    lock: Option<crate::secrets::lock::SharedLock>,
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
            join_addr: String::new(),
            ca: None,
            lock: None,
        }
    }

    /// Where `swarm update --autolock` and `swarm unlock-key` see this manager's key files wrapped.
    pub fn with_lock(mut self, lock: crate::secrets::lock::SharedLock) -> Self {
        self.lock = Some(lock);
        self
    }

    /// The CA `swarm ca --issue-client` signs with and `swarm ca --rotate` rotates away from.
    pub fn with_ca(mut self, ca: crate::pki::SharedAuthority) -> Self {
        self.ca = Some(ca);
        self
    }

    /// The address `swarm join-token` tells joining nodes to dial.
    pub fn with_join_addr(mut self, addr: String) -> Self {
        self.join_addr = addr;
        self
    }

    fn ids(&self) -> std::sync::MutexGuard<'_, Box<dyn IdSource + Send>> {
        self.ids.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Proposes `ops` as one batch (nothing to do when empty).
    async fn propose(&self, ops: Vec<Op>) -> Result<(), ApiError> {
        if ops.is_empty() {
            return Ok(());
        }
        self.proposer.propose(ops).await?;
        Ok(())
    }

    fn now(&self) -> u64 {
        self.proposer.clock().now()
    }
}

/// How many times a planned write is planned again from the newer state when a controller's change came
/// between its read and its commit (the batch is refused as a whole, so nothing was half-applied).
const CONFLICT_ATTEMPTS: u32 = 5;

/// Runs `attempt` (which reads the store, plans and proposes) again while its batch is refused because
/// another change came first: the reconcile loops write all the time (task states, update progress, old secret
/// versions collected), and a user's `stack rm` or `service update` must not fail for that. A conflict that
/// persists is returned as it is.
async fn retried<T, F, Fut>(mut attempt: F) -> Result<T, ApiError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ApiError>>,
{
    let mut tries = 1;
    loop {
        match attempt().await {
            Err(ApiError::Conflict(_)) if tries < CONFLICT_ATTEMPTS => {
                tokio::time::sleep(std::time::Duration::from_millis(5 << tries)).await;
                tries += 1;
            }
            other => return other,
        }
    }
}

/// Objects as a list of JSON texts.
fn json_objects<T: serde::Serialize>(items: impl Iterator<Item = T>) -> control::JsonObjects {
    control::JsonObjects {
        json: items.map(|i| to_json(&i)).collect(),
    }
}

/// A handler's answer as a gRPC reply: the one place errors become a `Status`.
fn reply<T>(r: Result<T, ApiError>) -> Result<Response<T>, Status> {
    r.map(Response::new).map_err(Status::from)
}

#[tonic::async_trait]
impl Control for ControlApi {
    async fn deploy_stack(
        &self,
        request: Request<control::DeployStackRequest>,
    ) -> Result<Response<control::DeployStackResponse>, Status> {
        let req = request.into_inner();
        reply(retried(|| stack::deploy(self, req.clone())).await)
    }

    async fn stack_history(
        &self,
        request: Request<control::ObjectRef>,
    ) -> Result<Response<control::JsonObjects>, Status> {
        reply(stack::history(self, &request.into_inner().id_or_name))
    }

    async fn rollback_stack(
        &self,
        request: Request<control::RollbackStackRequest>,
    ) -> Result<Response<control::DeployStackResponse>, Status> {
        let req = request.into_inner();
        reply(retried(|| stack::rollback(self, req.clone())).await)
    }

    async fn record_stack_source(
        &self,
        request: Request<control::RecordStackSourceRequest>,
    ) -> Result<Response<control::JsonObject>, Status> {
        let req = request.into_inner();
        reply(retried(|| stack::record_source(self, req.clone())).await)
    }

    async fn list_stacks(
        &self,
        _: Request<control::Empty>,
    ) -> Result<Response<control::JsonObjects>, Status> {
        Ok(Response::new(stack::list(self)))
    }

    async fn remove_stack(
        &self,
        request: Request<control::ObjectRef>,
    ) -> Result<Response<control::JsonObjects>, Status> {
        let name = request.into_inner().id_or_name;
        reply(retried(|| stack::remove(self, &name)).await)
    }

    async fn list_services(
        &self,
        request: Request<control::ServiceFilter>,
    ) -> Result<Response<control::JsonObjects>, Status> {
        Ok(Response::new(service::list(
            self,
            &request.into_inner().stack,
        )))
    }

    async fn get_service(
        &self,
        request: Request<control::ObjectRef>,
    ) -> Result<Response<control::JsonObject>, Status> {
        reply(service::get(self, &request.into_inner().id_or_name))
    }

    async fn scale_service(
        &self,
        request: Request<control::ScaleRequest>,
    ) -> Result<Response<control::JsonObject>, Status> {
        let req = request.into_inner();
        reply(retried(|| service::scale(self, req.clone())).await)
    }

    async fn remove_service(
        &self,
        request: Request<control::ObjectRef>,
    ) -> Result<Response<control::Empty>, Status> {
        let key = request.into_inner().id_or_name;
        reply(retried(|| service::remove(self, &key)).await)
    }

    async fn update_service(
        &self,
        request: Request<control::ServiceUpdateRequest>,
    ) -> Result<Response<control::ServiceUpdateResponse>, Status> {
        let req = request.into_inner();
        reply(retried(|| service::update(self, req.clone())).await)
    }

    async fn rollback_service(
        &self,
        request: Request<control::ObjectRef>,
    ) -> Result<Response<control::ServiceUpdateResponse>, Status> {
        let key = request.into_inner().id_or_name;
        reply(retried(|| service::rollback(self, &key)).await)
    }

    type ServiceLogsStream = Pin<Box<dyn Stream<Item = Result<control::LogLine, Status>> + Send>>;

    async fn service_logs(
        &self,
        request: Request<control::LogsRequest>,
    ) -> Result<Response<Self::ServiceLogsStream>, Status> {
        let lines = logs::service_logs(self, request.into_inner()).await?;
        Ok(Response::new(Box::pin(lines.map(Ok))))
    }

    async fn list_tasks(
        &self,
        request: Request<control::TaskFilter>,
    ) -> Result<Response<control::JsonObjects>, Status> {
        reply(task::list(self, &request.into_inner()))
    }

    async fn list_nodes(
        &self,
        _: Request<control::Empty>,
    ) -> Result<Response<control::JsonObjects>, Status> {
        Ok(Response::new(node::list(self)))
    }

    async fn get_node(
        &self,
        request: Request<control::ObjectRef>,
    ) -> Result<Response<control::JsonObject>, Status> {
        reply(node::get(self, &request.into_inner().id_or_name))
    }

    async fn update_node(
        &self,
        request: Request<control::NodeUpdateRequest>,
    ) -> Result<Response<control::JsonObject>, Status> {
        let req = request.into_inner();
        reply(retried(|| node::update(self, req.clone())).await)
    }

    async fn create_secret(
        &self,
        request: Request<control::CreateSecretRequest>,
    ) -> Result<Response<control::JsonObject>, Status> {
        reply(secret::create(self, request.into_inner()).await)
    }

    async fn list_secrets(
        &self,
        _: Request<control::Empty>,
    ) -> Result<Response<control::JsonObjects>, Status> {
        Ok(Response::new(secret::list(self)))
    }

    async fn get_secret(
        &self,
        request: Request<control::ObjectRef>,
    ) -> Result<Response<control::JsonObject>, Status> {
        reply(secret::get(self, &request.into_inner().id_or_name))
    }

    async fn remove_secret(
        &self,
        request: Request<control::ObjectRef>,
    ) -> Result<Response<control::Empty>, Status> {
        let key = request.into_inner().id_or_name;
        reply(retried(|| secret::remove(self, &key)).await)
    }

    async fn create_network(
        &self,
        request: Request<control::CreateNetworkRequest>,
    ) -> Result<Response<control::JsonObject>, Status> {
        reply(network::create(self, request.into_inner()).await)
    }

    async fn list_networks(
        &self,
        _: Request<control::Empty>,
    ) -> Result<Response<control::JsonObjects>, Status> {
        Ok(Response::new(network::list(self)))
    }

    async fn get_network(
        &self,
        request: Request<control::ObjectRef>,
    ) -> Result<Response<control::JsonObject>, Status> {
        reply(network::get(self, &request.into_inner().id_or_name))
    }

    async fn remove_network(
        &self,
        request: Request<control::ObjectRef>,
    ) -> Result<Response<control::Empty>, Status> {
        let key = request.into_inner().id_or_name;
        reply(retried(|| network::remove(self, &key)).await)
    }

    async fn info(
        &self,
        _: Request<control::Empty>,
    ) -> Result<Response<control::InfoResponse>, Status> {
        Ok(Response::new(control::InfoResponse {
            json: (self.info)().to_string(),
        }))
    }

    async fn update_cluster(
        &self,
        request: Request<control::ClusterUpdateRequest>,
    ) -> Result<Response<control::JsonObject>, Status> {
        reply(cluster::update(self, request.into_inner()).await)
    }

    async fn join_token(
        &self,
        request: Request<control::JoinTokenRequest>,
    ) -> Result<Response<control::JoinTokenResponse>, Status> {
        reply(cluster::join_token(self, request.into_inner()).await)
    }

    async fn remove_node(
        &self,
        request: Request<control::NodeRemoveRequest>,
    ) -> Result<Response<control::Empty>, Status> {
        let req = request.into_inner();
        reply(retried(|| node::remove(self, req.clone())).await)
    }

    async fn issue_client_certificate(
        &self,
        request: Request<control::ClientCertRequest>,
    ) -> Result<Response<control::ClientCertResponse>, Status> {
        if request
            .extensions()
            .get::<crate::transport::PeerInfo>()
            .is_some()
        {
            return Err(Status::permission_denied(
                "client certificates are issued on the manager's local socket only",
            ));
        }
        reply(cluster::issue_client(self, request.into_inner()))
    }

    async fn root_ca(
        &self,
        request: Request<control::RootCaRequest>,
    ) -> Result<Response<control::RootCaResponse>, Status> {
        reply(ca::root_ca(self, request.into_inner()).await)
    }

    async fn unlock_key(
        &self,
        request: Request<control::UnlockKeyRequest>,
    ) -> Result<Response<control::UnlockKeyResponse>, Status> {
        reply(lock::unlock_key(self, request.into_inner()).await)
    }
}

/// Who may call the control API over TCP: a client certificate (`swarm ca --issue-client`) or a manager's;
/// never a worker's, never a caller without a certificate.
pub fn admin_only(request: Request<()>) -> Result<Request<()>, Status> {
    use crate::pki::NodeRole;
    let role = request
        .extensions()
        .get::<crate::transport::PeerInfo>()
        .and_then(|p| p.identity.as_ref().map(|i| i.role));
    match role {
        Some(NodeRole::Client | NodeRole::Manager) => Ok(request),
        Some(NodeRole::Worker) => Err(Status::permission_denied(
            "a worker certificate cannot use the control API",
        )),
        None => Err(Status::unauthenticated(
            "the control API over TCP needs a client certificate (swarmctl swarm ca --issue-client on a manager)",
        )),
    }
}

/// Proposes `updated` over `cluster`: `false` when the cluster object changed meanwhile (read it again and
/// retry), an error for anything else.
pub(crate) async fn try_update_cluster(
    api: &ControlApi,
    cluster: &crate::model::Cluster,
    updated: crate::model::Cluster,
) -> Result<bool, ApiError> {
    match api
        .propose(vec![crate::store::Op::UpdateCluster {
            cluster: updated,
            expected_version: cluster.meta.version,
        }])
        .await
    {
        Ok(()) => Ok(true),
        Err(ApiError::Conflict(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_conflict_is_planned_again_and_a_lasting_one_returned() {
        let mut calls = 0;
        let r = retried(|| {
            calls += 1;
            let n = calls;
            async move {
                if n < 3 {
                    Err(ApiError::Conflict("secret gone".into()))
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert!(matches!(r, Ok(3)));
        let mut calls = 0;
        let r: Result<(), _> = retried(|| {
            calls += 1;
            async { Err(ApiError::Conflict("always".into())) }
        })
        .await;
        assert!(matches!(r, Err(ApiError::Conflict(m)) if m == "always"));
        assert_eq!(calls, CONFLICT_ATTEMPTS);
        // any other error is returned at once
        let mut calls = 0;
        let r: Result<(), _> = retried(|| {
            calls += 1;
            async { Err(ApiError::NotFound("no stack x".into())) }
        })
        .await;
        assert!(matches!(r, Err(ApiError::NotFound(_))));
        assert_eq!(calls, 1);
    }
}
