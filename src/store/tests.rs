//! Unit tests of the store: apply (versions, atomicity, determinism, task state order), snapshots, watch and
//! the Raft state machine bridge.

use super::raft::StateMachine;
use super::*;
use crate::model::{
    Cluster, ClusterSettings, Config, FileObjectSpec, Meta, Network, NetworkSpec, Node,
    NodeDescription, NodeSpec, NodeStatus, RestartHistory, RestartKey, Secret, SecretData, Service,
    ServiceSpec, Stack, Task, TaskSpec, TaskState, TaskStatus,
};

pub(super) fn service(id: &str, name: &str) -> Service {
    Service {
        id: id.into(),
        meta: Meta::default(),
        spec: ServiceSpec {
            name: name.into(),
            ..ServiceSpec::default()
        },
        spec_version: 1,
        previous_spec: None,
        update_status: None,
        virtual_ips: Vec::new(),
    }
}

pub(super) fn task(id: &str, service_id: &str, slot: u64, node: Option<&str>) -> Task {
    Task {
        id: id.into(),
        meta: Meta::default(),
        service_id: service_id.into(),
        slot,
        node_id: node.map(str::to_owned),
        spec: TaskSpec::default(),
        spec_version: 1,
        desired_state: TaskState::Running,
        status: TaskStatus::new(TaskState::New, 0),
        attachments: Vec::new(),
    }
}

pub(super) fn node(id: &str) -> Node {
    Node {
        id: id.into(),
        meta: Meta::default(),
        description: NodeDescription::default(),
        spec: NodeSpec::default(),
        status: NodeStatus::default(),
        manager_status: None,
    }
}

pub(super) fn batch(time: u64, ops: Vec<Op>) -> Batch {
    Batch { ops, time }
}

/// A state with one of every kind of object, built by batches at indexes 1..=3.
fn populated() -> ClusterState {
    let mut s = ClusterState::new();
    let first = batch(
        1000,
        vec![
            Op::CreateCluster(Cluster {
                id: "c1".into(),
                meta: Meta::default(),
                settings: ClusterSettings::default(),
                join_tokens: Default::default(),
                removed_nodes: Default::default(),
                ca_rotation: None,
                unlock_key: Default::default(),
            }),
            Op::CreateNode(node("n1")),
            Op::CreateService(service("s1", "app_web")),
            Op::CreateSecret(Secret {
                id: "sec1".into(),
                meta: Meta::default(),
                spec: FileObjectSpec {
                    name: "app_pw".into(),
                    data: SecretData(vec![0xde, 0xad]),
                    ..FileObjectSpec::default()
                },
            }),
            Op::CreateConfig(crate::model::Config {
                id: "cfg1".into(),
                meta: Meta::default(),
                spec: FileObjectSpec::default(),
            }),
            Op::CreateNetwork(Network {
                id: "net1".into(),
                meta: Meta::default(),
                spec: NetworkSpec::default(),
                allocation: None,
            }),
            Op::CreateStack(Stack {
                name: "app".into(),
                revision: 1,
                files: vec![("stack.yml".into(), "services: {}".into())],
                service_ids: vec!["s1".into()],
                ..Stack::default()
            }),
        ],
    );
    s.apply_batch(1, &first).expect("first batch applies");
    let second = batch(
        2000,
        vec![
            Op::CreateTask(task("t1", "s1", 1, Some("n1"))),
            Op::CreateTask(task("t2", "s1", 2, None)),
            Op::CreateRestartHistory(RestartHistory {
                key: RestartKey::Slot {
                    service_id: "s1".into(),
                    slot: 1,
                },
                meta: Meta::default(),
                restarts: vec![1500],
            }),
        ],
    );
    s.apply_batch(3, &second).expect("second batch applies");
    s
}

#[test]
fn create_sets_meta_from_index_and_batch_time_and_fills_indexes() {
    let s = populated();
    assert_eq!(s.applied_index(), 3);
    let svc = s.service("s1").expect("service");
    assert_eq!(
        svc.meta,
        Meta {
            version: 1,
            created_at: 1000,
            updated_at: 1000
        }
    );
    assert_eq!(
        s.service_by_name("app_web").map(|s| s.id.as_str()),
        Some("s1")
    );
    assert_eq!(s.task("t1").map(|t| t.meta.version), Some(3));
    let of_service: Vec<_> = s.tasks_of_service("s1").map(|t| t.id.as_str()).collect();
    assert_eq!(of_service, ["t1", "t2"]);
    let on_node: Vec<_> = s.tasks_on_node("n1").map(|t| t.id.as_str()).collect();
    assert_eq!(on_node, ["t1"]);
    assert_eq!(s.stack("app").map(|s| s.revision), Some(1));
    assert_eq!(s.cluster().map(|c| c.id.as_str()), Some("c1"));
    let key = RestartKey::Slot {
        service_id: "s1".into(),
        slot: 1,
    };
    assert_eq!(s.restart_history(&key).map(|h| h.count_since(0)), Some(1));
}

#[test]
fn update_sets_version_and_updated_at_keeps_created_at_and_moves_indexes() {
    let mut s = populated();
    let mut t = s.task("t2").cloned().expect("t2");
    t.node_id = Some("n1".into());
    t.status.state = TaskState::Assigned;
    let events = s
        .apply_batch(
            7,
            &batch(
                5000,
                vec![Op::UpdateTask {
                    task: t,
                    expected_version: 3,
                }],
            ),
        )
        .expect("update applies");
    assert_eq!(
        events,
        [Event::Updated {
            kind: ObjectKind::Task,
            id: "t2".into()
        }]
    );
    let t = s.task("t2").expect("t2");
    assert_eq!(
        t.meta,
        Meta {
            version: 7,
            created_at: 2000,
            updated_at: 5000
        }
    );
    let on_node: Vec<_> = s.tasks_on_node("n1").map(|t| t.id.as_str()).collect();
    assert_eq!(on_node, ["t1", "t2"]);
}

#[test]
fn renaming_a_service_moves_the_name_index() {
    let mut s = populated();
    let mut svc = s.service("s1").cloned().expect("s1");
    svc.spec.name = "app_api".into();
    let op = Op::UpdateService {
        service: svc,
        expected_version: 1,
    };
    s.apply_batch(4, &batch(1, vec![op])).expect("rename");
    assert!(s.service_by_name("app_web").is_none());
    assert_eq!(
        s.service_by_name("app_api").map(|s| s.id.as_str()),
        Some("s1")
    );
}

#[test]
fn apply_is_deterministic() {
    let mut a = populated();
    let mut b = populated();
    let mut t = a.task("t1").cloned().expect("t1");
    t.status.state = TaskState::Running;
    let next = batch(
        9000,
        vec![
            Op::UpdateTask {
                task: t,
                expected_version: 3,
            },
            Op::CreateService(service("s2", "app_db")),
            Op::DeleteTask { id: "t2".into() },
        ],
    );
    let ea = a.apply_batch(10, &next);
    let eb = b.apply_batch(10, &next);
    assert_eq!(ea, eb);
    assert_eq!(a, b);
    assert_eq!(
        a.to_snapshot().expect("snapshot a"),
        b.to_snapshot().expect("snapshot b")
    );
}

#[test]
fn a_batch_with_one_stale_op_changes_nothing() {
    let mut s = populated();
    let before = s.clone();
    let mut t = s.task("t1").cloned().expect("t1");
    t.status.state = TaskState::Running;
    let stale = batch(
        9000,
        vec![
            Op::CreateService(service("s2", "app_db")),
            Op::CreateTask(task("t3", "s2", 1, Some("n1"))),
            Op::UpdateTask {
                task: t,
                expected_version: 3,
            },
            Op::DeleteTask { id: "t2".into() },
            Op::UpdateService {
                service: service("s1", "app_web"),
                expected_version: 0, // stored version is 1
            },
        ],
    );
    let err = s
        .apply_batch(10, &stale)
        .expect_err("stale op rejects the batch");
    assert_eq!(err.op, Some(4));
    assert_eq!(
        err.reason,
        Rejection::VersionMismatch {
            kind: ObjectKind::Service,
            id: "s1".into(),
            expected: 0,
            actual: 1
        }
    );
    assert_eq!(s, before, "tables, indexes and applied index unchanged");
}

#[test]
fn creates_and_deletes_are_checked() {
    let mut s = populated();
    let cases = vec![
        (
            Op::CreateService(service("s1", "other")),
            Rejection::AlreadyExists {
                kind: ObjectKind::Service,
                id: "s1".into(),
            },
        ),
        (
            Op::CreateService(service("s9", "app_web")),
            Rejection::NameConflict {
                kind: ObjectKind::Service,
                name: "app_web".into(),
                existing_id: "s1".into(),
            },
        ),
        (
            Op::DeleteTask { id: "nope".into() },
            Rejection::NotFound {
                kind: ObjectKind::Task,
                id: "nope".into(),
            },
        ),
        (
            Op::DeleteStack {
                name: "app".into(),
                expected_version: 2,
            },
            Rejection::VersionMismatch {
                kind: ObjectKind::Stack,
                id: "app".into(),
                expected: 2,
                actual: 1,
            },
        ),
        (
            Op::CreateCluster(Cluster {
                id: "c2".into(),
                meta: Meta::default(),
                settings: ClusterSettings::default(),
                join_tokens: Default::default(),
                removed_nodes: Default::default(),
                ca_rotation: None,
                unlock_key: Default::default(),
            }),
            Rejection::AlreadyExists {
                kind: ObjectKind::Cluster,
                id: "c1".into(),
            },
        ),
    ];
    let before = s.clone();
    for (op, want) in cases {
        let err = s
            .apply_batch(20, &batch(1, vec![op.clone()]))
            .expect_err("rejected");
        assert_eq!(err.reason, want, "{op:?}");
        assert_eq!(s, before);
    }
}

#[test]
fn task_state_cannot_go_backwards() {
    let mut s = populated();
    let mut t = s.task("t1").cloned().expect("t1");
    t.status.state = TaskState::Running;
    s.apply_batch(
        5,
        &batch(
            1,
            vec![Op::UpdateTask {
                task: t.clone(),
                expected_version: 3,
            }],
        ),
    )
    .expect("forward");

    t.status.state = TaskState::Assigned;
    let err = s
        .apply_batch(
            6,
            &batch(
                2,
                vec![Op::UpdateTask {
                    task: t.clone(),
                    expected_version: 5,
                }],
            ),
        )
        .expect_err("backwards status");
    assert!(matches!(err.reason, Rejection::TaskStateBackwards { .. }));

    t.status.state = TaskState::Running;
    t.desired_state = TaskState::Ready;
    let err = s
        .apply_batch(
            6,
            &batch(
                2,
                vec![Op::UpdateTask {
                    task: t,
                    expected_version: 5,
                }],
            ),
        )
        .expect_err("backwards desired state");
    assert!(matches!(err.reason, Rejection::TaskStateBackwards { .. }));
    assert_eq!(
        s.task("t1").map(|t| t.status.state),
        Some(TaskState::Running)
    );
}

#[test]
fn an_index_not_after_the_last_applied_is_rejected() {
    let mut s = populated();
    let err = s
        .apply_batch(3, &batch(1, vec![Op::CreateNode(node("n2"))]))
        .expect_err("replayed index");
    assert_eq!(
        err.reason,
        Rejection::IndexNotAfter {
            index: 3,
            applied: 3
        }
    );
}

#[test]
fn snapshot_restore_round_trip() {
    let s = populated();
    let bytes = s.to_snapshot().expect("snapshot");
    assert_eq!(bytes.first(), Some(&FORMAT_VERSION));
    let back = ClusterState::from_snapshot(&bytes).expect("restore");
    assert_eq!(back, s);
    assert_eq!(back.tasks_on_node("n1").count(), 1);
}

#[test]
fn bad_snapshots_and_entries_are_errors_not_panics() {
    assert!(matches!(
        ClusterState::from_snapshot(&[]),
        Err(CodecError::Empty { .. })
    ));
    assert!(matches!(
        ClusterState::from_snapshot(&[9, 1, 2]),
        Err(CodecError::UnsupportedVersion { version: 9, .. })
    ));
    assert!(matches!(
        ClusterState::from_snapshot(&[FORMAT_VERSION, 0xff, 0xff, 0xff]),
        Err(CodecError::Decode { .. })
    ));
    let sm = StoreStateMachine::default();
    let err = sm
        .apply_entry(1, &[FORMAT_VERSION, 0xff])
        .expect_err("garbage");
    assert!(matches!(err.reason, Rejection::Malformed { .. }));
}

#[test]
fn batch_encoding_round_trips() {
    let b = batch(
        42,
        vec![
            Op::CreateService(service("s1", "web")),
            Op::DeleteTask { id: "t".into() },
        ],
    );
    let bytes = b.encode().expect("encode");
    assert_eq!(bytes[0], FORMAT_VERSION);
    assert_eq!(Batch::decode(&bytes).expect("decode"), b);
}

#[test]
fn state_machine_applies_snapshots_and_restores() {
    let mut sm = StoreStateMachine::default();
    let entry = batch(7, vec![Op::CreateNode(node("n1"))])
        .encode()
        .expect("encode");
    let response = decode_response(&StateMachine::apply(&mut sm, 5, &entry)).expect("response");
    assert_eq!(
        response,
        Ok(Applied {
            index: 5,
            changes: 1
        })
    );
    let snap = StateMachine::snapshot(&sm);

    let mut other = StoreStateMachine::default();
    let (_, mut rx) = other.store().watch();
    StateMachine::restore(&mut other, 5, &snap).expect("restore");
    assert_eq!(rx.try_recv().ok(), Some(Change::Reset { index: 5 }));
    let a = sm.store().view(ClusterState::clone);
    let b = other.store().view(ClusterState::clone);
    assert_eq!(a, b);
    assert!(StateMachine::restore(&mut other, 6, b"junk").is_err());
    assert_eq!(
        other.store().view(ClusterState::clone),
        a,
        "failed restore changes nothing"
    );
}

#[test]
fn names_of_secrets_configs_and_networks_are_unique() {
    let mut s = populated();
    let dup = Secret {
        id: "sec2".into(),
        meta: Meta::default(),
        spec: FileObjectSpec {
            name: "app_pw".into(),
            ..FileObjectSpec::default()
        },
    };
    let err = s
        .apply_batch(9, &batch(1, vec![Op::CreateSecret(dup)]))
        .expect_err("duplicate name");
    assert_eq!(
        err.reason,
        Rejection::NameConflict {
            kind: ObjectKind::Secret,
            name: "app_pw (version 1)".into(),
            existing_id: "sec1".into()
        }
    );
}

#[test]
fn secrets_and_configs_are_unique_per_name_and_version() {
    let mut s = populated();
    let versioned = |id: &str, version: &str| Secret {
        id: id.into(),
        meta: Meta::default(),
        spec: FileObjectSpec {
            name: "app_pw".into(),
            labels: [(
                crate::model::OBJECT_VERSION_LABEL.to_string(),
                version.to_string(),
            )]
            .into(),
            ..FileObjectSpec::default()
        },
    };
    // version 2 of an existing name is accepted next to version 1 (sec1 has no label: version 1)
    s.apply_batch(9, &batch(1, vec![Op::CreateSecret(versioned("sec2", "2"))]))
        .expect("a new version under the same name");
    assert_eq!(s.secrets().filter(|x| x.spec.name == "app_pw").count(), 2);
    // the same version twice is refused, explicit label or not
    let err = s
        .apply_batch(
            10,
            &batch(1, vec![Op::CreateSecret(versioned("sec3", "2"))]),
        )
        .expect_err("same name and version");
    assert!(
        matches!(err.reason, Rejection::NameConflict { ref existing_id, .. } if existing_id == "sec2")
    );
    let err = s
        .apply_batch(
            10,
            &batch(1, vec![Op::CreateSecret(versioned("sec3", "1"))]),
        )
        .expect_err("explicit version 1 collides with the unlabelled one");
    assert!(
        matches!(err.reason, Rejection::NameConflict { ref existing_id, .. } if existing_id == "sec1")
    );
    // configs follow the same rule
    let cfg = |id: &str, version: &str| Config {
        id: id.into(),
        meta: Meta::default(),
        spec: versioned(id, version).spec,
    };
    s.apply_batch(
        10,
        &batch(
            1,
            vec![
                Op::CreateConfig(cfg("c1", "1")),
                Op::CreateConfig(cfg("c2", "2")),
            ],
        ),
    )
    .expect("two config versions");
    let err = s
        .apply_batch(11, &batch(1, vec![Op::CreateConfig(cfg("c3", "2"))]))
        .expect_err("same config version");
    assert!(matches!(
        err.reason,
        Rejection::NameConflict {
            kind: ObjectKind::Config,
            ..
        }
    ));
}

#[test]
fn a_task_keeps_its_service_and_slot() {
    let mut s = populated();
    let mut t = s.task("t1").cloned().expect("t1");
    t.slot = 9;
    let op = Op::UpdateTask {
        task: t,
        expected_version: 3,
    };
    let err = s.apply_batch(9, &batch(1, vec![op])).expect_err("slot");
    assert!(matches!(err.reason, Rejection::Immutable { ref field, .. } if field == "slot"));
}
