//! Unit tests of the limits the store's apply enforces: an entry past a limit is refused whatever sent it,
//! objects over a lowered limit may stay but not grow, and the cluster's own limits stay under their ceilings.

use super::tests::{batch, service};
use super::*;
use crate::model::limits::{CEILING_REPLICAS, MAX_LABELS_BYTES};
use crate::model::{
    Cluster, ClusterSettings, FileObjectSpec, Limits, Meta, Secret, SecretData, ServiceMode, Stack,
};

fn cluster(limits: Limits) -> Cluster {
    Cluster {
        id: "c1".into(),
        meta: Meta::default(),
        settings: ClusterSettings {
            limits,
            ..ClusterSettings::default()
        },
        join_tokens: Default::default(),
        removed_nodes: Default::default(),
        ca_rotation: None,
        unlock_key: Default::default(),
    }
}

fn with_replicas(replicas: u64) -> crate::model::Service {
    let mut s = service("s1", "web");
    s.spec.mode = ServiceMode::Replicated { replicas };
    s
}

fn over_limit(r: BatchRejected) -> String {
    match r.reason {
        Rejection::OverLimit { .. } => r.reason.to_string(),
        other => panic!("expected OverLimit, got {other:?}"),
    }
}

#[test]
fn a_forged_scale_past_the_limit_is_never_applied() {
    let mut s = ClusterState::new();
    s.apply_batch(
        1,
        &batch(1, vec![Op::CreateCluster(cluster(Limits::default()))]),
    )
    .unwrap();
    s.apply_batch(2, &batch(2, vec![Op::CreateService(with_replicas(3))]))
        .unwrap();
    let forged = Op::UpdateService {
        service: with_replicas(4_000_000_000),
        expected_version: 2,
    };
    let err = s.apply_batch(3, &batch(3, vec![forged])).unwrap_err();
    assert_eq!(
        over_limit(err),
        "service web: replicas 4000000000 is over the limit of 10000 (the cluster's limit: raise it with \
         `swarmctl swarm update --max-replicas N`, up to 1000000)"
    );
    assert_eq!(
        s.service("s1").unwrap().spec.mode,
        ServiceMode::Replicated { replicas: 3 }
    );
    // the same is refused at creation, even before the cluster object exists
    let mut empty = ClusterState::new();
    let err = empty
        .apply_batch(1, &batch(1, vec![Op::CreateService(with_replicas(10_001))]))
        .unwrap_err();
    assert!(over_limit(err).contains("over the limit of 10000"));
}

#[test]
fn a_lowered_limit_keeps_what_is_stored_but_refuses_growth() {
    let mut s = ClusterState::new();
    s.apply_batch(
        1,
        &batch(1, vec![Op::CreateCluster(cluster(Limits::default()))]),
    )
    .unwrap();
    s.apply_batch(2, &batch(2, vec![Op::CreateService(with_replicas(8))]))
        .unwrap();
    let lowered = cluster(Limits {
        max_replicas: 5,
        ..Limits::default()
    });
    s.apply_batch(
        3,
        &batch(
            3,
            vec![Op::UpdateCluster {
                cluster: lowered,
                expected_version: 1,
            }],
        ),
    )
    .unwrap();
    let mut same = with_replicas(8);
    same.spec.labels.insert("touched".into(), "yes".into());
    s.apply_batch(
        4,
        &batch(
            4,
            vec![Op::UpdateService {
                service: same,
                expected_version: 2,
            }],
        ),
    )
    .expect("an update that does not grow is applied");
    let err = s
        .apply_batch(
            5,
            &batch(
                5,
                vec![Op::UpdateService {
                    service: with_replicas(9),
                    expected_version: 4,
                }],
            ),
        )
        .unwrap_err();
    assert!(over_limit(err).contains("replicas 9 is over the limit of 5"));
}

#[test]
fn cluster_limits_cannot_pass_their_ceilings() {
    let mut s = ClusterState::new();
    let err = s
        .apply_batch(
            1,
            &batch(
                1,
                vec![Op::CreateCluster(cluster(Limits {
                    max_replicas: CEILING_REPLICAS + 1,
                    ..Limits::default()
                }))],
            ),
        )
        .unwrap_err();
    assert!(over_limit(err).contains("--max-replicas 1000001 is over the limit of 1000000"));
}

#[test]
fn oversized_secrets_labels_and_stacks_are_refused() {
    let mut s = ClusterState::new();
    let secret = Secret {
        id: "x".into(),
        meta: Meta::default(),
        spec: FileObjectSpec {
            name: "big".into(),
            data: SecretData(vec![0; 600 * 1024]),
            ..FileObjectSpec::default()
        },
    };
    let err = s
        .apply_batch(1, &batch(1, vec![Op::CreateSecret(secret)]))
        .unwrap_err();
    assert!(over_limit(err).starts_with("secret big: data bytes 614400 is over the limit"));

    let mut labelled = with_replicas(1);
    labelled
        .spec
        .labels
        .insert("k".into(), "v".repeat(MAX_LABELS_BYTES as usize));
    let err = s
        .apply_batch(1, &batch(1, vec![Op::CreateService(labelled)]))
        .unwrap_err();
    assert!(over_limit(err).contains("service labels bytes"));

    let crowded = Stack {
        name: "big".into(),
        service_ids: (0..5001).map(|i| format!("s{i}")).collect(),
        ..Stack::default()
    };
    let err = s
        .apply_batch(1, &batch(1, vec![Op::CreateStack(crowded)]))
        .unwrap_err();
    assert!(over_limit(err).contains("services in one stack 5001 is over the limit of 5000"));
}
