//! The watcher's rounds: scan the source, load each stack (cached by revision), decide (`decide`), and do what
//! was decided through a [`Cluster`] (the control API in `swarmctl`, a fake in tests); then prune the stacks
//! this watcher created whose files are gone. A round over only some stacks (the files that changed) never
//! prunes. Errors reaching the cluster end the round; the next one tries again (the client reconnects).
//!
//! Must not: open connections itself (the `Cluster` does), or touch a stack it did not decide on.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

use super::decide::{decide, short, Input, Local, Step};
use super::git::Repo;
use super::scan::{self, Entry, Loaded};
use crate::api::control;
use crate::model::{Limits, PlanItem, Service, Stack, StackSource, SyncState};

/// A failed call to the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterError {
    /// The cluster could not be reached (the round ends; the next one reconnects).
    Unreachable(String),
    /// The cluster refused the call (an invalid stack, a stale write): that stack only.
    Refused(String),
}

impl std::fmt::Display for ClusterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClusterError::Unreachable(m) | ClusterError::Refused(m) => f.write_str(m),
        }
    }
}

/// What the watcher needs from the cluster: the control API's stack calls.
#[allow(async_fn_in_trait)]
pub trait Cluster {
    /// Every stack.
    async fn stacks(&mut self) -> Result<Vec<Stack>, ClusterError>;
    /// Every service.
    async fn services(&mut self) -> Result<Vec<Service>, ClusterError>;
    /// The cluster's limits (what the files are checked against).
    async fn limits(&mut self) -> Result<Limits, ClusterError>;
    /// A deploy (or a dry run, per the request): the plan items.
    async fn deploy(
        &mut self,
        request: control::DeployStackRequest,
    ) -> Result<Vec<PlanItem>, ClusterError>;
    /// Writes a record on an existing stack.
    async fn record(&mut self, name: &str, source: &StackSource) -> Result<(), ClusterError>;
    /// Removes a stack.
    async fn remove(&mut self, name: &str) -> Result<(), ClusterError>;
}

/// Where the stacks come from.
pub enum Source {
    /// A directory.
    Dir(PathBuf),
    /// A git repository kept in a local clone.
    Git(Repo),
}

/// How the watcher behaves.
#[derive(Clone, Debug)]
pub struct Options {
    /// Remove stacks this watcher created whose files are gone.
    pub prune: bool,
    /// Revert changes made in the cluster by hand.
    pub self_heal: bool,
}

/// A stack's last load, kept while its revision stays.
struct Cached {
    revision: String,
    loaded: Result<Loaded, String>,
    /// The stack's and its services' versions when a dry run last found nothing to do.
    settled: Option<Vec<(String, u64)>>,
    reported: bool,
    /// The cluster refused this revision of a stack that does not exist: not asked again.
    refused: bool,
}

/// The watcher's state between rounds.
pub struct Watcher {
    /// This watcher's source id (recorded on every stack it keeps).
    pub source_id: String,
    source: Source,
    options: Options,
    cache: HashMap<String, Cached>,
    limits: Option<Limits>,
    log: Box<dyn FnMut(&str)>,
}

/// The versions that say whether anything of a stack changed (the stack object, its services).
fn fingerprint(stack: Option<&Stack>, services: &[&Service]) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = services
        .iter()
        .map(|s| (s.id.clone(), s.meta.version))
        .collect();
    v.push((String::new(), stack.map_or(0, |s| s.meta.version)));
    v.sort();
    v
}

impl Watcher {
    /// A watcher of `source`, logging each line it has to say through `log`.
    pub fn new(source: Source, options: Options, log: Box<dyn FnMut(&str)>) -> Watcher {
        let source_id = match &source {
            Source::Dir(d) => format!("dir:{}", d.display()),
            Source::Git(r) => r.source_id(),
        };
        Watcher {
            source_id,
            source,
            options,
            cache: HashMap::new(),
            limits: None,
            log,
        }
    }

    /// The directory scanned.
    fn dir(&self) -> PathBuf {
        match &self.source {
            Source::Dir(d) => d.clone(),
            Source::Git(r) => r.stacks_dir(),
        }
    }

    /// For a git source: fetches and checks out the branch's newest commit; the stacks whose files changed
    /// (None: all, on the first checkout). For a directory: nothing to do.
    pub async fn fetch(&mut self) -> Result<Option<BTreeSet<String>>, String> {
        match &mut self.source {
            Source::Dir(_) => Ok(Some(BTreeSet::new())),
            Source::Git(r) => {
                let changed = r.sync().await?;
                if let Some(names) = &changed {
                    for n in names {
                        self.cache.remove(n);
                    }
                } else {
                    self.cache.clear();
                }
                Ok(changed)
            }
        }
    }

    fn say(&mut self, line: String) {
        (self.log)(&line);
    }

    /// A directory's stack: the hash of its files, read each round. A git stack: the last commit that touched
    /// its files, kept until a fetch says they changed.
    async fn revision(&self, entry: &Entry) -> Result<String, String> {
        match &self.source {
            Source::Dir(_) => scan::content_revision(entry),
            Source::Git(r) => match self.cache.get(&entry.name) {
                Some(c) => Ok(c.revision.clone()),
                None => r.revision_of(entry).await,
            },
        }
    }

    /// One round over every stack (`only` None: then prunes too) or over the stacks named.
    pub async fn round<C: Cluster>(
        &mut self,
        cluster: &mut C,
        only: Option<&BTreeSet<String>>,
    ) -> Result<(), ClusterError> {
        let dir = self.dir();
        let entries = match scan::scan(&dir) {
            Ok(e) => e,
            Err(e) => {
                self.say(format!("cannot read the stacks: {e}"));
                return Ok(());
            }
        };
        if self.limits.is_none() {
            self.limits = Some(cluster.limits().await?);
        }
        let limits = self.limits.clone().unwrap_or_default();
        let stacks: HashMap<String, Stack> = cluster
            .stacks()
            .await?
            .into_iter()
            .map(|s| (s.name.clone(), s))
            .collect();
        let services = cluster.services().await?;
        let names: BTreeSet<String> = entries.iter().map(|e| e.name.clone()).collect();
        for entry in &entries {
            if only.is_some_and(|o| !o.contains(&entry.name)) {
                continue;
            }
            let mine: Vec<&Service> = services
                .iter()
                .filter(|s| {
                    s.spec.labels.get(crate::model::STACK_NAMESPACE_LABEL) == Some(&entry.name)
                })
                .collect();
            self.sync_one(cluster, entry, stacks.get(&entry.name), &mine, &limits)
                .await?;
        }
        if only.is_none() && self.options.prune {
            for s in stacks.values() {
                let ours = s
                    .source
                    .as_ref()
                    .is_some_and(|r| r.source == self.source_id);
                if ours && !names.contains(&s.name) {
                    match cluster.remove(&s.name).await {
                        Ok(()) => self.say(format!("{}: removed (its file is gone)", s.name)),
                        Err(ClusterError::Refused(m)) => {
                            self.say(format!("{}: cannot remove: {m}", s.name))
                        }
                        Err(e) => return Err(e),
                    }
                    self.cache.remove(&s.name);
                }
            }
        }
        Ok(())
    }

    async fn sync_one<C: Cluster>(
        &mut self,
        cluster: &mut C,
        entry: &Entry,
        stack: Option<&Stack>,
        services: &[&Service],
        limits: &Limits,
    ) -> Result<(), ClusterError> {
        let name = entry.name.clone();
        let revision = match self.revision(entry).await {
            Ok(r) => r,
            Err(e) => {
                self.say(format!("{name}: {e}"));
                return Ok(());
            }
        };
        let fresh = self.cache.get(&name).is_none_or(|c| c.revision != revision);
        if fresh {
            let loaded = scan::load(entry, limits).map_err(|p| p.join("\n"));
            self.cache.insert(
                name.clone(),
                Cached {
                    revision: revision.clone(),
                    loaded,
                    settled: None,
                    reported: false,
                    refused: false,
                },
            );
        }
        let Some(cached) = self.cache.get_mut(&name) else {
            return Ok(());
        };
        if cached.refused && stack.is_none() {
            return Ok(());
        }
        let local = match &cached.loaded {
            Ok(_) => Local::Loaded {
                revision: revision.clone(),
            },
            Err(e) => Local::Broken {
                revision: revision.clone(),
                error: e.clone(),
            },
        };
        let mut lines = Vec::new();
        if !cached.reported {
            cached.reported = true;
            match &cached.loaded {
                Err(e) => lines.push(format!(
                    "{name}: {} does not load, not applied (the running stack is left as it is):\n{e}",
                    entry.path
                )),
                Ok(l) => lines.extend(l.warnings.iter().map(|w| format!("{name}: {w}"))),
            }
        }
        let request = cached.loaded.as_ref().ok().map(|l| l.request.clone());
        let print = fingerprint(stack, services);
        let source_id = self.source_id.clone();
        let input = Input {
            source: &source_id,
            path: &entry.path,
            local: &local,
            exists: stack.is_some(),
            stored: stack.and_then(|s| s.source.as_ref()),
            services,
            self_heal: self.options.self_heal,
            unchanged_since_plan: cached.settled.as_ref() == Some(&print),
        };
        let mut step = decide(&input, None);
        if step == Step::Plan {
            let Some(request) = request.clone() else {
                return Ok(());
            };
            match cluster.deploy(request).await {
                Ok(items) => {
                    let changes: Vec<String> = items
                        .iter()
                        .filter(|i| i.is_change())
                        .map(PlanItem::line)
                        .collect();
                    if changes.is_empty() {
                        cached.settled = Some(print);
                    }
                    step = decide(&input, Some(&changes));
                }
                Err(ClusterError::Refused(m)) => {
                    lines.push(format!("{name}: the cluster refused the stack: {m}"));
                    cached.refused = true;
                    step = refused(&input, &m);
                }
                Err(e) => return Err(e),
            }
        }
        for l in lines {
            self.say(l);
        }
        match step {
            Step::Nothing | Step::Plan => {}
            Step::Record(record) => {
                let line = match record.sync {
                    SyncState::Synced => None,
                    SyncState::OutOfSync => Some(format!(
                        "{name}: OutOfSync (not reverted: --no-self-heal): {}",
                        record.error
                    )),
                    SyncState::Failed => Some(format!(
                        "{name}: revision {} Failed: {}",
                        short(&record.revision),
                        record.error
                    )),
                };
                match cluster.record(&name, &record).await {
                    Ok(()) => line.into_iter().for_each(|l| self.say(l)),
                    Err(ClusterError::Refused(m)) => self.say(format!("{name}: {m}")),
                    Err(e) => return Err(e),
                }
            }
            Step::Deploy { record, reason } => {
                let Some(mut request) = request else {
                    return Ok(());
                };
                request.dry_run = false;
                request.source_json = crate::api::to_json(&record);
                match cluster.deploy(request).await {
                    Ok(items) => {
                        let changes: Vec<String> = items
                            .iter()
                            .filter(|i| i.is_change())
                            .map(PlanItem::line)
                            .collect();
                        self.say(format!(
                            "{name}: deployed ({reason}): {}",
                            if changes.is_empty() {
                                "nothing changed".to_string()
                            } else {
                                changes.join("; ")
                            }
                        ));
                    }
                    Err(ClusterError::Refused(m)) => {
                        self.say(format!("{name}: the cluster refused the stack: {m}"));
                        if let Step::Record(r) = refused(&input, &m) {
                            let _ = cluster.record(&name, &r).await;
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }
}

/// A deploy the cluster refused: the revision is Failed (recorded when the stack exists).
fn refused(input: &Input<'_>, message: &str) -> Step {
    if !input.exists {
        return Step::Nothing;
    }
    let kept = input.stored.filter(|s| s.source == input.source);
    let revision = match input.local {
        Local::Loaded { revision } | Local::Broken { revision, .. } => revision.clone(),
    };
    if kept.is_some_and(|k| k.sync == SyncState::Failed && k.revision == revision) {
        return Step::Nothing;
    }
    Step::Record(StackSource {
        source: input.source.to_string(),
        path: input.path.to_string(),
        revision,
        sync: SyncState::Failed,
        error: format!("refused by the cluster: {message}"),
        applied_revision: kept.map(|k| k.applied_revision.clone()).unwrap_or_default(),
        applied_at: kept.map_or(0, |k| k.applied_at),
        updated_at: 0,
    })
}
