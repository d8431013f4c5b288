//! A real manager and agent in one process with a short heartbeat period and an executor that takes more than
//! the dispatcher's three missed heartbeat periods to answer: the node is never marked down.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;

use crate::api::control::Empty;
use crate::exec::fake::FakeExecutor;
use crate::exec::{Controller, ExecError, Executor, LogLines, LogOptions, ProcessSpec, TaskInfo};
use crate::model::{Node, NodeState};

const PERIOD: Duration = Duration::from_millis(200);
/// Longer than the three heartbeat periods the dispatcher waits before marking a node down, plus one tick of its
/// monitor: an agent whose heartbeats waited for the executor would surely be marked down.
const SLOW: Duration = Duration::from_millis(800);

/// An executor whose `list` (called by every `assign` and `resync`) takes [`SLOW`].
struct SlowExecutor {
    inner: FakeExecutor,
    lists: AtomicUsize,
}

impl Executor for SlowExecutor {
    fn controller(&self, spec: ProcessSpec) -> Result<Box<dyn Controller>, ExecError> {
        self.inner.controller(spec)
    }
    fn list(&self) -> BoxFuture<'_, Result<Vec<TaskInfo>, ExecError>> {
        async move {
            tokio::time::sleep(SLOW).await;
            let r = self.inner.list().await;
            self.lists.fetch_add(1, Ordering::SeqCst);
            r
        }
        .boxed()
    }
    fn adopt<'a>(
        &'a self,
        task_id: &'a str,
    ) -> BoxFuture<'a, Result<Box<dyn Controller>, ExecError>> {
        self.inner.adopt(task_id)
    }
    fn logs<'a>(
        &'a self,
        task_id: &'a str,
        opts: LogOptions,
    ) -> BoxFuture<'a, Result<LogLines, ExecError>> {
        self.inner.logs(task_id, opts)
    }
}

async fn nodes(socket: &std::path::Path) -> Option<Vec<Node>> {
    let channel = crate::transport::unix_channel(socket.to_path_buf())
        .await
        .ok()?;
    let mut client = crate::api::control::control_client::ControlClient::new(channel);
    let list = client.list_nodes(Empty {}).await.ok()?.into_inner();
    list.json
        .iter()
        .map(|j| serde_json::from_str(j).ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_executor_does_not_delay_heartbeats() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let mut config = super::NodeConfig::new(
        dir.path().join("state"),
        format!("127.0.0.1:{port}").parse().expect("addr"),
    );
    config.heartbeat_period = PERIOD;
    let executor = Arc::new(SlowExecutor {
        inner: FakeExecutor::new(),
        lists: AtomicUsize::new(0),
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let node = tokio::spawn(super::run_with_executor(
        config,
        executor.clone(),
        async move {
            let _ = stopped.await;
        },
    ));
    let socket = dir.path().join("state").join("swarmd.sock");

    // the node registers Ready; remember the version of that record
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let registered = loop {
        if let Some(n) = nodes(&socket).await.and_then(|n| n.into_iter().next()) {
            if n.status.state == NodeState::Ready {
                break n;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the node never became ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    // while the agent converges through the slow executor, the recorded node never changes: it is never marked
    // down (which would also bump its version when it comes back)
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while executor.lists.load(Ordering::SeqCst) < 3 {
        let now = nodes(&socket).await.expect("list nodes");
        assert_eq!(now.len(), 1);
        assert_eq!(now[0].status.state, NodeState::Ready, "{:?}", now[0].status);
        assert_eq!(
            now[0].meta.version, registered.meta.version,
            "{:?}",
            now[0].status
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "the executor was not asked"
        );
        tokio::time::sleep(PERIOD / 4).await;
    }
    let _ = stop.send(());
    node.await.expect("join").expect("the node stops cleanly");
}
