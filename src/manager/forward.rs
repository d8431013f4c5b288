//! Control calls on a follower go to the leader: a tower layer around the control service that forwards each
//! gRPC request as it is (streams included) to the leader's control API over mutual TLS, so the CLI never
//! needs to know who leads. Served here instead: calls that only read this node's view (`Info`), calls refused
//! over TCP (`IssueClientCertificate`), calls already forwarded once (no ping-pong while leadership moves),
//! and every call while no leader is known — reads then answer from the local store, marked with
//! [`STALE_HEADER`], and writes fail fast with the proposer's "no leader" error.
//!
//! Must not: look into the messages it forwards.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tonic::body::Body;
use tonic::codegen::http;
use tonic::server::NamedService;
use tonic::transport::Channel;
use tower::Service;

/// Request header set on a forwarded call: the receiver serves it itself.
pub const FORWARDED_HEADER: &str = "x-swarm-forwarded";
/// Response header on a call a follower answered from its own store while no leader was known.
pub const STALE_HEADER: &str = "x-swarm-stale";

/// Where the leader is, as the forwarding layer needs it.
pub trait LeaderRoute: Send + Sync + 'static {
    /// A channel to the leader's control API; `None` when this node leads or no leader is known.
    fn leader(&self) -> Option<Channel>;
    /// Whether some node (this one included) leads now.
    fn has_leader(&self) -> bool;
}

/// Methods a follower answers itself.
const LOCAL: &[&str] = &["/Info", "/IssueClientCertificate"];

/// The control service `S`, forwarding to the leader through `route`.
pub struct Forward<S> {
    inner: S,
    route: Arc<dyn LeaderRoute>,
}

impl<S: Clone> Clone for Forward<S> {
    fn clone(&self) -> Self {
        Forward {
            inner: self.inner.clone(),
            route: self.route.clone(),
        }
    }
}

impl<S> Forward<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, route: Arc<dyn LeaderRoute>) -> Self {
        Forward { inner, route }
    }
}

impl<S: NamedService> NamedService for Forward<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<http::Request<Body>> for Forward<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        let path = request.uri().path().to_string();
        let local = LOCAL.iter().any(|m| path.ends_with(m))
            || request.headers().contains_key(FORWARDED_HEADER);
        let leader = if local { None } else { self.route.leader() };
        let Some(mut channel) = leader else {
            let stale = !local && !self.route.has_leader();
            let mut inner = self.inner.clone();
            return Box::pin(async move {
                let mut response = inner.call(request).await?;
                if stale {
                    response
                        .headers_mut()
                        .insert(STALE_HEADER, http::HeaderValue::from_static("no-leader"));
                }
                Ok(response)
            });
        };
        request
            .headers_mut()
            .insert(FORWARDED_HEADER, http::HeaderValue::from_static("1"));
        Box::pin(async move {
            let ready = tower::ServiceExt::ready(&mut channel).await;
            match ready.map(|c| c.call(request)) {
                Ok(call) => match call.await {
                    Ok(response) => Ok(response),
                    Err(e) => Ok(tonic::Status::unavailable(format!(
                        "cannot reach the leader to forward {path}: {e}"
                    ))
                    .into_http()),
                },
                Err(e) => Ok(tonic::Status::unavailable(format!(
                    "cannot reach the leader to forward {path}: {e}"
                ))
                .into_http()),
            }
        })
    }
}
