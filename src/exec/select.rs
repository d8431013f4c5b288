//! Several runtimes on one node (`swarmd --executor process,docker`): [`SelectExecutor`] hands each new task to
//! the runtime its spec names in the label [`EXECUTOR_LABEL`] (`com.swarm.executor: docker`), or to the first
//! one (the node's default) when it names none. A task naming a runtime this node does not run is refused
//! (permanent: the task is rejected, saying which runtimes the node has).
//!
//! What a runtime already holds is found by asking them all: `list` is every runtime's list (an error of any
//! one is the error: a partial list would make the agent think the other runtime's tasks were lost), `adopt`
//! and `logs` go to the first runtime that knows the task (the others answer `NotFound`).

use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;

use super::{Controller, ExecError, Executor, LogLines, LogOptions, ProcessSpec, TaskInfo};

/// The label of a task's spec that names its runtime (`process`, `docker`).
pub const EXECUTOR_LABEL: &str = "com.swarm.executor";

/// Runtimes by name; the first is the default.
pub struct SelectExecutor {
    runtimes: Vec<(String, Arc<dyn Executor>)>,
}

impl SelectExecutor {
    /// `runtimes` in order of preference: the first runs every task whose spec names none. At least one.
    pub fn new(runtimes: Vec<(String, Arc<dyn Executor>)>) -> Self {
        assert!(!runtimes.is_empty(), "a node runs at least one runtime");
        SelectExecutor { runtimes }
    }

    /// The runtimes' names, the default first.
    pub fn names(&self) -> Vec<&str> {
        self.runtimes.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// The runtime `spec` goes to.
    fn runtime_for(&self, spec: &ProcessSpec) -> Result<&Arc<dyn Executor>, ExecError> {
        let Some(wanted) = spec.labels.get(EXECUTOR_LABEL).map(|s| s.trim()) else {
            return Ok(&self.runtimes[0].1);
        };
        self.runtimes
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(wanted))
            .map(|(_, e)| e)
            .ok_or_else(|| ExecError::InvalidSpec {
                task: spec.task_name.clone(),
                message: format!(
                    "{EXECUTOR_LABEL}={wanted:?}: this node runs the {} executor{} (swarmd --executor {})",
                    self.names().join(" and "),
                    if self.runtimes.len() > 1 { "s" } else { "" },
                    self.names().join(",")
                ),
            })
    }
}

/// The first answer of `runtimes` that is not `NotFound`; `NotFound` when none knows the task.
async fn first_that_knows<'a, T>(
    runtimes: &'a [(String, Arc<dyn Executor>)],
    task_id: &'a str,
    ask: impl Fn(&'a dyn Executor) -> BoxFuture<'a, Result<T, ExecError>>,
) -> Result<T, ExecError> {
    let mut error = None;
    for (_, r) in runtimes {
        match ask(r.as_ref()).await {
            Err(ExecError::NotFound(_)) => {}
            Ok(v) => return Ok(v),
            // another runtime may still have it; the first such error is the answer otherwise
            Err(e) => {
                error.get_or_insert(e);
            }
        }
    }
    Err(error.unwrap_or_else(|| ExecError::NotFound(task_id.to_string())))
}

impl Executor for SelectExecutor {
    fn controller(&self, spec: ProcessSpec) -> Result<Box<dyn Controller>, ExecError> {
        self.runtime_for(&spec)?.controller(spec)
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<TaskInfo>, ExecError>> {
        async move {
            let mut all = Vec::new();
            for (_, r) in &self.runtimes {
                all.extend(r.list().await?);
            }
            all.sort_by(|a, b| a.task_id.cmp(&b.task_id));
            Ok(all)
        }
        .boxed()
    }

    fn adopt<'a>(
        &'a self,
        task_id: &'a str,
    ) -> BoxFuture<'a, Result<Box<dyn Controller>, ExecError>> {
        first_that_knows(&self.runtimes, task_id, move |r| r.adopt(task_id)).boxed()
    }

    fn logs<'a>(
        &'a self,
        task_id: &'a str,
        opts: LogOptions,
    ) -> BoxFuture<'a, Result<LogLines, ExecError>> {
        first_that_knows(&self.runtimes, task_id, move |r| r.logs(task_id, opts)).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::fake::FakeExecutor;
    use crate::exec::RuntimeState;

    fn spec(id: &str, runtime: Option<&str>) -> ProcessSpec {
        let mut s = ProcessSpec {
            task_id: id.into(),
            task_name: format!("web.1.{id}"),
            argv: vec!["sleep".into(), "1".into()],
            ..Default::default()
        };
        if let Some(r) = runtime {
            s.labels.insert(EXECUTOR_LABEL.into(), r.into());
        }
        s
    }

    fn two() -> (Arc<FakeExecutor>, Arc<FakeExecutor>, SelectExecutor) {
        let (p, d) = (Arc::new(FakeExecutor::new()), Arc::new(FakeExecutor::new()));
        let s = SelectExecutor::new(vec![
            ("process".into(), p.clone() as Arc<dyn Executor>),
            ("docker".into(), d.clone() as Arc<dyn Executor>),
        ]);
        (p, d, s)
    }

    async fn ids(e: &dyn Executor) -> Vec<String> {
        let mut ids: Vec<String> = e
            .list()
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.task_id)
            .collect();
        ids.sort();
        ids
    }

    async fn run(s: &SelectExecutor, spec: ProcessSpec) {
        let c = s.controller(spec).expect("a controller");
        c.prepare().await.expect("prepare");
        c.start().await.expect("start");
    }

    #[tokio::test]
    async fn each_task_runs_on_the_runtime_its_label_names_or_the_first() {
        let (p, d, s) = two();
        run(&s, spec("t1", None)).await;
        run(&s, spec("t2", Some("docker"))).await;
        run(&s, spec("t3", Some("Process"))).await;
        assert_eq!(ids(p.as_ref()).await, vec!["t1", "t3"]);
        assert_eq!(ids(d.as_ref()).await, vec!["t2"]);
        // the node's view: every runtime's tasks
        let all: Vec<(String, RuntimeState)> = s
            .list()
            .await
            .unwrap()
            .into_iter()
            .map(|t| (t.task_id, t.state))
            .collect();
        assert_eq!(
            all.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>(),
            vec!["t1", "t2", "t3"]
        );
        // adopted and logged from whichever runtime has it
        assert_eq!(s.adopt("t2").await.expect("adopt").task_id(), "t2");
        assert_eq!(s.adopt("t1").await.expect("adopt").task_id(), "t1");
        assert!(matches!(
            s.adopt("nope").await.err(),
            Some(ExecError::NotFound(_))
        ));
        assert!(s.logs("t2", LogOptions::default()).await.is_ok());
        assert!(matches!(
            s.logs("nope", LogOptions::default()).await.err(),
            Some(ExecError::NotFound(_))
        ));
    }

    #[test]
    fn a_runtime_the_node_does_not_run_is_refused_for_good() {
        let only = SelectExecutor::new(vec![(
            "process".into(),
            Arc::new(FakeExecutor::new()) as Arc<dyn Executor>,
        )]);
        let err = only.controller(spec("t1", Some("docker"))).err().unwrap();
        assert!(!err.is_temporary());
        assert_eq!(
            err.to_string(),
            "task web.1.t1: invalid spec: com.swarm.executor=\"docker\": this node runs the process \
             executor (swarmd --executor process)"
        );
        let (_, _, s) = two();
        let err = s.controller(spec("t1", Some("kata"))).err().unwrap();
        assert!(
            err.to_string().contains(
                "runs the process and docker executors (swarmd --executor process,docker)"
            ),
            "{err}"
        );
    }
}
