//! Network requests: create (the name, driver and subnet checked here; IPAM allocates the subnet and VNI right
//! after, the user's subnet when one is given), ls, inspect, rm (refused while a service or a live task uses
//! the network, naming them: `ipam::usage`, the rule `stack rm` and the network collector keep to as well).
//!
//! Must not: allocate addresses itself (that is the IPAM controller's), or change the store but by proposal.

use super::error::ApiError;
use super::objects::resolve_network;
use super::{json_objects, ControlApi};
use crate::api::control;
use crate::api::to_json;
use crate::manager::ipam::usage::check_unused;
use crate::manager::rules::check_object_name;
use crate::model::{self, Cidr, NetworkSpec};
use crate::store::{ClusterState, Op};

/// The drivers `network create` accepts.
const DRIVERS: &[&str] = &["overlay"];

/// Why a network `spec` cannot be created in `state` (None: it can).
pub fn refusal(state: &ClusterState, spec: &NetworkSpec) -> Option<ApiError> {
    if state.network_by_name(&spec.name).is_some() {
        return Some(ApiError::Exists(format!(
            "network with name {} already exists",
            spec.name
        )));
    }
    if !DRIVERS.contains(&spec.driver.as_str()) {
        return Some(ApiError::Invalid(format!(
            "network driver {:?} is not supported (use {})",
            spec.driver,
            DRIVERS.join(", ")
        )));
    }
    if spec.subnets.len() > 1 {
        return Some(ApiError::Invalid(
            "only one --subnet per network is supported".into(),
        ));
    }
    let subnet = spec.subnets.first()?;
    let mine = match Cidr::parse(subnet) {
        Ok(c) => c,
        Err(e) => return Some(ApiError::Invalid(format!("invalid --subnet: {e}"))),
    };
    // every other network's subnet: allocated, or asked for and about to be
    for n in state.networks() {
        let theirs = n.allocation.as_ref().map(|a| a.subnet.as_str()).or(n
            .spec
            .subnets
            .first()
            .map(String::as_str));
        if let Some(theirs) = theirs {
            if Cidr::parse(theirs).is_ok_and(|c| c.overlaps(&mine)) {
                return Some(ApiError::Precondition(format!(
                    "subnet {mine} overlaps {theirs} of network {}",
                    n.spec.name
                )));
            }
        }
    }
    None
}

/// `network create`.
pub async fn create(
    api: &ControlApi,
    req: control::CreateNetworkRequest,
) -> Result<control::JsonObject, ApiError> {
    check_object_name(&req.name)?;
    let spec = NetworkSpec {
        name: req.name,
        labels: req.labels.into_iter().collect(),
        driver: if req.driver.is_empty() {
            "overlay".into()
        } else {
            req.driver
        },
        driver_opts: Default::default(),
        attachable: req.attachable,
        internal: req.internal,
        subnets: req.subnets,
        ingress: false,
    };
    if let Some(e) = api.store.view(|s| refusal(s, &spec)) {
        return Err(e);
    }
    let id = api.ids().next_id();
    let network = model::Network {
        id: id.clone(),
        meta: model::Meta::default(),
        spec,
        allocation: None,
    };
    api.propose(vec![Op::CreateNetwork(network)]).await?;
    let n = api.store.view(|s| s.network(&id).map(to_json));
    Ok(control::JsonObject {
        json: n.unwrap_or_default(),
    })
}

/// `network ls`.
pub fn list(api: &ControlApi) -> control::JsonObjects {
    api.store.view(|s| json_objects(s.networks()))
}

/// `network inspect`.
pub fn get(api: &ControlApi, key: &str) -> Result<control::JsonObject, ApiError> {
    let json = api.store.view(|s| resolve_network(s, key).map(to_json))?;
    Ok(control::JsonObject { json })
}

/// `network rm`: refused while the network is in use (a redeploy or IPAM may move its version: retried).
pub async fn remove(api: &ControlApi, key: &str) -> Result<control::Empty, ApiError> {
    for _ in 0..5 {
        let network = api.store.view(|s| {
            let network = resolve_network(s, key).cloned()?;
            check_unused(s, &network).map_err(ApiError::Precondition)?;
            Ok::<_, ApiError>(network)
        })?;
        match api
            .propose(vec![Op::DeleteNetwork {
                id: network.id,
                expected_version: network.meta.version,
            }])
            .await
        {
            Err(ApiError::Conflict(_)) => continue,
            r => return r.map(|()| control::Empty {}),
        }
    }
    Err(ApiError::Conflict(format!(
        "network {key} kept changing; try again"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manager::testutil::World;

    fn spec(name: &str, driver: &str, subnets: &[&str]) -> NetworkSpec {
        NetworkSpec {
            name: name.into(),
            driver: driver.into(),
            subnets: subnets.iter().map(|s| s.to_string()).collect(),
            ..NetworkSpec::default()
        }
    }

    #[test]
    fn create_refuses_taken_names_other_drivers_and_overlapping_subnets() {
        let w = World::with(vec![Op::CreateNetwork(model::Network {
            id: "n1".into(),
            meta: model::Meta::default(),
            spec: spec("front", "overlay", &["10.1.0.0/16"]),
            allocation: None,
        })]);
        let cases: Vec<(NetworkSpec, Option<&str>)> = vec![
            (
                spec("front", "overlay", &[]),
                Some("network with name front already exists"),
            ),
            (
                spec("b", "macvlan", &[]),
                Some("network driver \"macvlan\" is not supported (use overlay)"),
            ),
            (
                spec("b", "overlay", &["10.1.2.0/24"]),
                Some("subnet 10.1.2.0/24 overlaps 10.1.0.0/16 of network front"),
            ),
            (
                spec("b", "overlay", &["10.1.2.0"]),
                Some("invalid --subnet: \"10.1.2.0\" is not in CIDR form (e.g. 10.0.1.0/24)"),
            ),
            (
                spec("b", "overlay", &["10.2.0.0/24", "10.3.0.0/24"]),
                Some("only one --subnet per network is supported"),
            ),
            (spec("b", "overlay", &["10.2.0.0/24"]), None),
            (spec("b", "overlay", &[]), None),
        ];
        for (s, want) in cases {
            let got = refusal(&w.state, &s).map(|e| match e {
                ApiError::Exists(m) | ApiError::Invalid(m) | ApiError::Precondition(m) => m,
                other => format!("{other:?}"),
            });
            assert_eq!(got.as_deref(), want, "{s:?}");
        }
    }
}
