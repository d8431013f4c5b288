//! Tests of the change feeds: the copying `watch` (every event after its snapshot, gap-free under concurrent
//! apply) and the copy-free subscription ([`Store::subscribe`]): no lost wake-ups, coalescing, restores.

use std::collections::BTreeSet;
use std::time::Duration;

use super::tests::{batch, service, task};
use super::*;

fn create(store: &Store, index: u64) {
    let id = format!("s{index}");
    store
        .apply(
            index,
            &batch(index, vec![Op::CreateService(service(&id, &id))]),
        )
        .expect("applied");
}

/// Whether `changed` resolves within a short (paused-time) wait.
async fn wakes(changes: &mut Changes) -> Option<u64> {
    tokio::time::timeout(Duration::from_millis(50), changes.changed())
        .await
        .ok()
}

#[tokio::test(start_paused = true)]
async fn a_change_after_subscribing_wakes_the_subscriber_earlier_ones_do_not() {
    let store = Store::default();
    create(&store, 1);
    let mut changes = store.subscribe();
    assert!(
        !changes.has_changed(),
        "changes before subscribing are not news"
    );
    assert_eq!(wakes(&mut changes).await, None);
    create(&store, 2);
    assert!(changes.has_changed());
    assert_eq!(wakes(&mut changes).await, Some(2));
    assert_eq!(store.version(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_burst_of_changes_wakes_once_with_the_latest_version() {
    let store = Store::default();
    let mut changes = store.subscribe();
    for i in 1..=5 {
        create(&store, i);
    }
    assert_eq!(wakes(&mut changes).await, Some(5));
    assert!(!changes.has_changed());
    assert_eq!(
        wakes(&mut changes).await,
        None,
        "coalesced into one wake-up"
    );
}

#[tokio::test(start_paused = true)]
async fn a_change_while_the_subscriber_is_busy_is_not_lost() {
    let store = Store::default();
    let mut changes = store.subscribe();
    create(&store, 1);
    assert_eq!(wakes(&mut changes).await, Some(1));
    // the subscriber reads the state, and meanwhile another batch lands: the next wait returns at once
    let seen = store.view(|s| s.applied_index());
    create(&store, 2);
    assert_eq!(seen, 1);
    assert_eq!(wakes(&mut changes).await, Some(2));
    assert_eq!(store.view(|s| s.applied_index()), 2);
}

#[tokio::test(start_paused = true)]
async fn rejected_batches_do_not_wake_restores_do() {
    let store = Store::default();
    create(&store, 1);
    let mut changes = store.subscribe();
    // the same index again is refused: nothing changed
    assert!(store
        .apply(1, &batch(1, vec![Op::CreateService(service("x", "x"))]))
        .is_err());
    assert_eq!(wakes(&mut changes).await, None);
    store.restore(7, ClusterState::new());
    assert_eq!(wakes(&mut changes).await, Some(2));
}

/// A writer on another thread applies batches while the subscriber loops "wait, then read": the last read
/// always sees the last batch (no wake-up lost between a read and the next wait).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_change_is_always_seen_under_concurrency() {
    const N: u64 = 300;
    let store = Store::default();
    let mut changes = store.subscribe();
    let writer = {
        let store = store.clone();
        std::thread::spawn(move || {
            for i in 1..=N {
                create(&store, i);
                if i % 7 == 0 {
                    std::thread::yield_now();
                }
            }
        })
    };
    let mut wakeups = 0;
    loop {
        let version = tokio::time::timeout(Duration::from_secs(10), changes.changed())
            .await
            .expect("the last change wakes the subscriber");
        wakeups += 1;
        let index = store.view(|s| s.applied_index());
        assert!(index >= version, "what is read is at least what woke us");
        if index == N {
            break;
        }
    }
    writer.join().expect("writer");
    assert!(wakeups <= N);
}

#[test]
fn dropping_the_store_leaves_subscribers_waiting_not_spinning() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut changes = Store::default().subscribe();
        assert_eq!(wakes(&mut changes).await, None);
    });
}

#[tokio::test(start_paused = true)]
async fn mark_seen_takes_earlier_changes_as_read() {
    let store = Store::default();
    let mut changes = store.subscribe();
    create(&store, 1);
    create(&store, 2);
    assert_eq!(changes.mark_seen(), 2);
    assert_eq!(wakes(&mut changes).await, None);
    create(&store, 3);
    assert_eq!(wakes(&mut changes).await, Some(3));
}

#[test]
fn watch_gets_every_event_after_its_snapshot() {
    let store = Store::default();
    store
        .apply(1, &batch(1, vec![Op::CreateService(service("s1", "web"))]))
        .expect("applied");
    let (snapshot, mut rx) = store.watch();
    assert_eq!(snapshot.applied_index(), 1);
    assert!(snapshot.service("s1").is_some());
    store
        .apply(
            2,
            &batch(2, vec![Op::CreateTask(task("t1", "s1", 1, None))]),
        )
        .expect("applied");
    store
        .apply(3, &batch(3, vec![Op::DeleteTask { id: "t1".into() }]))
        .expect("applied");
    let rejected = store.apply(4, &batch(4, vec![Op::DeleteTask { id: "t1".into() }]));
    assert!(rejected.is_err());
    let got: Vec<Change> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
    let touched_task = |task: &str| {
        let mut t = Touched::new();
        t.object(ObjectKind::Task, task);
        t.task_services.insert("s1".into());
        std::sync::Arc::new(t)
    };
    assert_eq!(
        got,
        [
            Change::Commit(Commit {
                index: 2,
                events: vec![Event::Created {
                    kind: ObjectKind::Task,
                    id: "t1".into()
                }],
                touched: touched_task("t1"),
            }),
            Change::Commit(Commit {
                index: 3,
                events: vec![Event::Deleted {
                    kind: ObjectKind::Task,
                    id: "t1".into()
                }],
                touched: touched_task("t1"),
            }),
        ]
    );
}

#[test]
fn touched_since_unions_the_changes_a_reader_missed_and_gives_up_on_a_restore() {
    let store = Store::default();
    assert_eq!(store.touched_since(0), (0, Some(Touched::new())));
    create(&store, 1);
    let v1 = store.version();
    store
        .apply(
            2,
            &batch(2, vec![Op::CreateTask(task("t1", "s1", 1, Some("n1")))]),
        )
        .expect("applied");
    let (now, t) = store.touched_since(0);
    assert_eq!(now, store.version());
    let t = t.expect("kept");
    assert_eq!(t.of(ObjectKind::Service).collect::<Vec<_>>(), ["s1"]);
    assert_eq!(t.of(ObjectKind::Task).collect::<Vec<_>>(), ["t1"]);
    assert_eq!(t.task_nodes, BTreeSet::from(["n1".to_string()]));
    // what a dispatcher stream asks: did anything after v1 concern node n1, or n2?
    assert!(store.touched_any_since(v1, |t| t.task_nodes.contains("n1")));
    assert!(!store.touched_any_since(v1, |t| t.task_nodes.contains("n2")));
    assert!(!store.touched_any_since(now, |_| true), "nothing after now");
    let (_, since_v1) = store.touched_since(v1);
    assert!(
        !since_v1.expect("kept").any(ObjectKind::Service),
        "only what came after v1"
    );
    assert_eq!(store.touched_since(now), (now, Some(Touched::new())));
    // a rejected batch touches nothing
    assert!(store
        .apply(3, &batch(3, vec![Op::DeleteTask { id: "nope".into() }]))
        .is_err());
    assert_eq!(store.touched_since(now), (now, Some(Touched::new())));
    store.restore(5, store.view(ClusterState::clone));
    assert_eq!(
        store.touched_since(now).1,
        None,
        "a restore: look at everything"
    );
    assert!(
        store.touched_any_since(now, |_| false),
        "a restore concerns everyone"
    );
}

#[test]
fn watch_is_gap_free_under_concurrent_apply() {
    const N: u64 = 300;
    let store = Store::default();
    let writer = store.clone();
    let handle = std::thread::spawn(move || {
        for i in 1..=N {
            let op = Op::CreateTask(task(&format!("t{i:04}"), "s", i, None));
            writer.apply(i, &batch(i, vec![op])).expect("applied");
        }
    });
    // Watch somewhere in the middle of the writes.
    while store.view(|s| s.applied_index()) < N / 3 {
        std::thread::yield_now();
    }
    let (snapshot, mut rx) = store.watch();
    handle.join().expect("writer");
    let mut seen: BTreeSet<String> = snapshot.tasks().map(|t| t.id.clone()).collect();
    let mut last = snapshot.applied_index();
    while let Ok(Change::Commit(commit)) = rx.try_recv() {
        assert_eq!(commit.index, last + 1, "no gap, no overlap");
        last = commit.index;
        for e in commit.events {
            assert!(
                seen.insert(e.id().to_owned()),
                "event already in the snapshot"
            );
        }
    }
    assert_eq!(last, N);
    assert_eq!(seen.len() as u64, N);
}
