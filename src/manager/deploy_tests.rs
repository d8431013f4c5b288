//! Table-style tests of the deploy planner: create / update (field diffs) / remove / unchanged / left, no-op
//! redeploys, revisions, secret rotation, service update status and manual rollback.

use super::*;
use crate::manager::testutil::World;
use crate::model::{FileReference, SecretData, ServiceMode, TaskState, UpdateState};
use crate::util::SeqIds;

fn label(stack: &str) -> std::collections::BTreeMap<String, String> {
    [(STACK_NAMESPACE_LABEL.to_string(), stack.to_string())].into()
}

fn svc(name: &str, image: &str, replicas: u64, secrets: &[&str]) -> ServiceSpec {
    let mut s = ServiceSpec {
        name: format!("app_{name}"),
        labels: label("app"),
        mode: ServiceMode::Replicated { replicas },
        ..ServiceSpec::default()
    };
    s.task.container.image = image.into();
    s.task.container.secrets = secrets
        .iter()
        .map(|n| FileReference {
            name: format!("app_{n}"),
            target: n.to_string(),
            ..FileReference::default()
        })
        .collect();
    s
}

fn secret(name: &str, data: &str) -> FileObjectSpec {
    FileObjectSpec {
        name: format!("app_{name}"),
        labels: label("app"),
        data: SecretData(data.as_bytes().to_vec()),
    }
}

fn stack(services: Vec<ServiceSpec>, secrets: Vec<FileObjectSpec>) -> StackSpec {
    StackSpec {
        name: "app".into(),
        services,
        secrets,
        ..StackSpec::default()
    }
}

type SameCheck = Box<dyn Fn(&FileObjectSpec) -> bool>;

/// Plans `spec` against the world (secret data compared as is: the tests do not seal).
fn plan(w: &World, spec: &StackSpec, prune: bool, ids: &mut SeqIds) -> DeployPlan {
    let same: Vec<SameCheck> = spec
        .secrets
        .iter()
        .map(|s| {
            let data = s.data.clone();
            Box::new(move |e: &FileObjectSpec| e.data == data) as SameCheck
        })
        .collect();
    let prepared: Vec<PreparedObject> = spec
        .secrets
        .iter()
        .zip(&same)
        .map(|(s, f)| PreparedObject {
            spec: s.clone(),
            same_as: f.as_ref(),
        })
        .collect();
    plan_deploy(
        &w.state,
        spec,
        &prepared,
        &[],
        vec![("stack.yml".into(), format!("{spec:?}"))],
        prune,
        w.time,
        ids,
    )
    .expect("plan")
}

fn deploy(w: &mut World, spec: &StackSpec, prune: bool, ids: &mut SeqIds) -> DeployPlan {
    let p = plan(w, spec, prune, ids);
    if !p.ops.is_empty() {
        w.apply_ops(p.ops.clone());
    }
    w.time += 1000;
    p
}

fn summary(p: &DeployPlan) -> Vec<String> {
    p.items.iter().map(PlanItem::line).collect()
}

#[test]
fn create_update_unchanged_left_and_prune() {
    let mut w = World::new();
    let mut ids = SeqIds::new("id");
    let v1 = stack(
        vec![svc("web", "web:1", 2, &[]), svc("db", "db:1", 1, &[])],
        vec![],
    );
    let p = deploy(&mut w, &v1, false, &mut ids);
    assert_eq!(
        summary(&p),
        vec!["create service app_web", "create service app_db"]
    );
    assert_eq!(p.revision, Some(1));

    // web changes image and replicas, db is gone from the files
    let mut web = svc("web", "web:2", 6, &[]);
    web.task.container.env = vec!["FOO=1".into()];
    let v2 = stack(vec![web], vec![]);
    let p = plan(&w, &v2, false, &mut ids);
    assert_eq!(
        summary(&p),
        vec![
            "update service app_web (image: web:1 → web:2; env: +FOO=1; replicas: 2 → 6)",
            "left (not pruned) service app_db",
        ]
    );
    let p = plan(&w, &v2, true, &mut ids);
    assert_eq!(
        summary(&p)[1],
        "remove service app_db",
        "prune removes what the files no longer name"
    );
    deploy(&mut w, &v2, true, &mut ids);
    assert!(w.state.service_by_name("app_db").is_none());
    let web = w.state.service_by_name("app_web").unwrap();
    assert_eq!(
        web.spec_version, 2,
        "a task template change bumps the spec version"
    );
    assert_eq!(
        web.update_status
            .as_ref()
            .map(|u| (u.state, u.message.as_str())),
        Some((UpdateState::Updating, "update in progress"))
    );
    assert_eq!(
        web.previous_spec
            .as_ref()
            .map(|s| s.task.container.image.as_str()),
        Some("web:1")
    );
    let stack = w.state.stack("app").unwrap();
    assert_eq!(stack.revision, 2);
    assert_eq!(stack.history.len(), 2);
    assert!(stack.history[1].changes[0].starts_with("update service app_web"));
}

#[test]
fn the_same_files_twice_is_a_no_op() {
    let mut w = World::new();
    let mut ids = SeqIds::new("id");
    let v1 = stack(
        vec![svc("web", "web:1", 2, &["pw"])],
        vec![secret("pw", "one")],
    );
    deploy(&mut w, &v1, false, &mut ids);
    let before = w.state.clone();
    let p = deploy(&mut w, &v1, false, &mut ids);
    assert!(p.ops.is_empty(), "{p:#?}");
    assert!(!p.has_changes());
    assert_eq!(p.revision, None);
    assert!(p.items.iter().all(|i| i.action == PlanAction::Unchanged));
    assert_eq!(w.state, before, "no new spec version, no new revision");
}

#[test]
fn replicas_only_keeps_the_spec_version() {
    let mut w = World::new();
    let mut ids = SeqIds::new("id");
    deploy(
        &mut w,
        &stack(vec![svc("web", "web:1", 2, &[])], vec![]),
        false,
        &mut ids,
    );
    let p = deploy(
        &mut w,
        &stack(vec![svc("web", "web:1", 5, &[])], vec![]),
        false,
        &mut ids,
    );
    assert_eq!(
        summary(&p),
        vec!["update service app_web (replicas: 2 → 5)"]
    );
    let web = w.state.service_by_name("app_web").unwrap();
    assert_eq!(web.spec_version, 1);
    assert_eq!(web.update_status, None);
}

#[test]
fn a_changed_secret_is_a_new_version_and_rolls_only_its_services() {
    let mut w = World::new();
    let mut ids = SeqIds::new("id");
    let v1 = stack(
        vec![svc("web", "web:1", 2, &["pw"]), svc("api", "api:1", 1, &[])],
        vec![secret("pw", "one")],
    );
    deploy(&mut w, &v1, false, &mut ids);
    let old_id = latest_secret(&w.state, "app_pw").unwrap().id.clone();
    let v2 = stack(
        vec![svc("web", "web:1", 2, &["pw"]), svc("api", "api:1", 1, &[])],
        vec![secret("pw", "two")],
    );
    let p = deploy(&mut w, &v2, false, &mut ids);
    assert_eq!(
        summary(&p),
        vec![
            "update secret app_pw (content changed: version 1 → 2)",
            "update service app_web (secrets: app_pw (new version))",
            "unchanged service app_api",
        ]
    );
    let versions: Vec<u64> = w
        .state
        .secrets()
        .map(|s| object_version(&s.spec.labels))
        .collect();
    assert_eq!(
        versions.len(),
        2,
        "the old version is kept while it is used"
    );
    let new = latest_secret(&w.state, "app_pw").unwrap();
    assert_eq!(object_version(&new.spec.labels), 2);
    assert_ne!(new.id, old_id);
    let web = w.state.service_by_name("app_web").unwrap();
    assert_eq!(web.spec.task.container.secrets[0].id, new.id);
    assert_eq!(web.spec_version, 2);
    assert_eq!(w.state.service_by_name("app_api").unwrap().spec_version, 1);
    assert_eq!(
        w.state.stack("app").unwrap().secret_ids,
        vec![new.id.clone()]
    );

    // gc keeps version 1 while web's previous spec (a rollback target) refers to it ...
    let gc = crate::manager::gc::reconcile(&w.state, w.time, &mut ids);
    assert!(gc.ops.is_empty(), "{gc:?}");
    // ... and removes it once nothing refers to it (a third version moves previous_spec on)
    let v3 = stack(
        vec![svc("web", "web:1", 2, &["pw"]), svc("api", "api:1", 1, &[])],
        vec![secret("pw", "three")],
    );
    deploy(&mut w, &v3, false, &mut ids);
    let gc = crate::manager::gc::reconcile(&w.state, w.time, &mut ids);
    assert_eq!(
        gc.ops,
        vec![Op::DeleteSecret {
            id: old_id,
            expected_version: 1
        }]
    );
}

#[test]
fn history_keeps_the_last_ten_with_sealed_specs() {
    let mut w = World::new();
    let mut ids = SeqIds::new("id");
    for n in 1..=12 {
        let v = stack(vec![svc("web", &format!("web:{n}"), 1, &[])], vec![]);
        deploy(&mut w, &v, false, &mut ids);
    }
    let s = w.state.stack("app").unwrap();
    assert_eq!(s.revision, 12);
    let revs: Vec<u64> = s.history.iter().map(|r| r.revision).collect();
    assert_eq!(revs, (3..=12).collect::<Vec<_>>());
    let spec: StackSpec = serde_json::from_str(&s.history[0].spec_json).unwrap();
    assert_eq!(spec.services[0].task.container.image, "web:3");
}

#[test]
fn manual_rollback_swaps_specs() {
    let mut w = World::new();
    let mut ids = SeqIds::new("id");
    deploy(
        &mut w,
        &stack(vec![svc("web", "web:1", 1, &[])], vec![]),
        false,
        &mut ids,
    );
    let web = w.state.service_by_name("app_web").unwrap();
    assert!(manual_rollback(web, w.time).is_none(), "no previous spec");
    deploy(
        &mut w,
        &stack(vec![svc("web", "web:2", 1, &[])], vec![]),
        false,
        &mut ids,
    );
    let web = w.state.service_by_name("app_web").unwrap().clone();
    let Some(Op::UpdateService { service, .. }) = manual_rollback(&web, w.time) else {
        panic!("a rollback op");
    };
    assert_eq!(service.spec.task.container.image, "web:1");
    assert_eq!(service.previous_spec.unwrap().task.container.image, "web:2");
    assert_eq!(service.spec_version, 3);
    let st = service.update_status.unwrap();
    assert_eq!(st.state, UpdateState::RollbackStarted);
    assert_eq!(st.message, "manually requested rollback");
}

fn with_networks(nets: &[(&str, &[&str])], service_nets: &[&str]) -> StackSpec {
    let mut web = svc("web", "web:1", 1, &[]);
    web.task.networks = service_nets
        .iter()
        .map(|n| crate::model::NetworkAttachment {
            target: n.to_string(),
            aliases: vec!["web".into()],
        })
        .collect();
    let mut spec = stack(vec![web], vec![]);
    spec.networks = nets
        .iter()
        .map(|(name, subnets)| crate::model::NetworkSpec {
            name: name.to_string(),
            labels: label("app"),
            driver: "overlay".into(),
            subnets: subnets.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        })
        .collect();
    spec
}

fn plan_err(w: &World, spec: &StackSpec) -> String {
    plan_deploy(
        &w.state,
        spec,
        &[],
        &[],
        vec![],
        false,
        w.time,
        &mut SeqIds::new("id"),
    )
    .map(|_| ())
    .unwrap_err()
    .to_string()
}

#[test]
fn networks_with_subnets_that_overlap_or_are_missing_are_refused() {
    let mut w = World::new();
    let mut taken = Network {
        id: "n0".into(),
        meta: Meta::default(),
        spec: model::NetworkSpec {
            name: "other".into(),
            ..Default::default()
        },
        allocation: None,
    };
    taken.allocation = Some(model::NetworkAllocation {
        subnet: "10.20.0.0/16".into(),
        vni: 4096,
        ..Default::default()
    });
    w.apply_ops(vec![Op::CreateNetwork(taken)]);
    let cases: Vec<(StackSpec, &str)> = vec![
        (
            with_networks(&[("app_a", &["10.20.1.0/24"])], &["app_a"]),
            "network app_a: subnet 10.20.1.0/24 overlaps 10.20.0.0/16 of network other",
        ),
        (
            with_networks(
                &[("app_a", &["10.30.0.0/16"]), ("app_b", &["10.30.5.0/24"])],
                &["app_a"],
            ),
            "network app_a: subnet 10.30.0.0/16 overlaps 10.30.5.0/24 of network app_b",
        ),
        (
            with_networks(&[("app_a", &["10.30.0.1/16"])], &["app_a"]),
            "network app_a: subnet \"10.30.0.1/16\" has host bits set (the subnet is 10.30.0.0/16)",
        ),
        (
            with_networks(&[("app_a", &[])], &["app_a", "app_nope"]),
            "service app_web: network app_nope not found",
        ),
    ];
    for (spec, want) in cases {
        assert_eq!(plan_err(&w, &spec), want);
    }
    let ok = with_networks(
        &[("app_a", &["10.30.0.0/16"]), ("app_b", &[])],
        &["app_a", "other"],
    );
    assert!(plan_deploy(
        &w.state,
        &ok,
        &[],
        &[],
        vec![],
        false,
        w.time,
        &mut SeqIds::new("id")
    )
    .is_ok());
}

#[test]
fn stack_rm_leaves_a_network_a_task_still_holds_to_the_collector() {
    let mut w = World::new();
    let mut ids = SeqIds::new("id");
    let spec = with_networks(&[("app_a", &[]), ("app_b", &[])], &["app_a"]);
    deploy(&mut w, &spec, false, &mut ids);
    let a = w.state.network_by_name("app_a").unwrap().id.clone();
    let web = w.state.service_by_name("app_web").unwrap().id.clone();
    let mut t = crate::manager::testutil::task(
        "t1",
        &web,
        1,
        Some("n1"),
        TaskState::Running,
        TaskState::Running,
    );
    t.attachments = vec![model::NetworkAddress {
        network_id: a.clone(),
        addr: "10.0.0.3/24".into(),
    }];
    w.apply_ops(vec![Op::CreateTask(t)]);
    let p = plan_remove_stack(&w.state, "app").expect("a stack");
    assert!(
        summary(&p).contains(&"remove network app_a".to_string()),
        "{:?}",
        summary(&p)
    );
    let deletes: Vec<&Op> = p
        .ops
        .iter()
        .filter(|o| matches!(o, Op::DeleteNetwork { .. }))
        .collect();
    assert_eq!(
        deletes.len(),
        1,
        "app_b now, app_a once its task ended: {deletes:?}"
    );
    w.apply_ops(p.ops);
    assert!(w.state.network(&a).is_some());
    assert!(
        crate::manager::ipam::usage::reconcile(&w.state, 0, &mut ids)
            .ops
            .is_empty()
    );
}
