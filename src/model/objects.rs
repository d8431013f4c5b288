//! Secrets, configs, networks and stacks as desired state.
//!
//! Secret data is held in `SecretData`, whose `Debug` prints `<redacted>` so it never reaches a log by accident.
//! Must not: encrypt or decrypt (that is `secrets`).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::service::ServiceSpec;

/// Bytes that must not be printed: `Debug` shows `<redacted>` and the length.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretData(pub Vec<u8>);

impl fmt::Debug for SecretData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<redacted {} bytes>", self.0.len())
    }
}

/// A secret or config to create (data included).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileObjectSpec {
    /// Cluster name (`STACK_db_password`).
    pub name: String,
    /// Labels (including the stack namespace label).
    pub labels: BTreeMap<String, String>,
    /// The content.
    pub data: SecretData,
}

/// A network to create.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkSpec {
    /// Cluster name (`STACK_default`).
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Driver (default overlay).
    pub driver: String,
    /// Driver options.
    pub driver_opts: BTreeMap<String, String>,
    /// Standalone containers may attach.
    pub attachable: bool,
    /// No outside connectivity.
    pub internal: bool,
    /// IPAM subnets.
    pub subnets: Vec<String>,
    /// The routing mesh's network (`ingress`, made with the cluster): services publishing a port in ingress
    /// mode attach to it.
    #[serde(default)]
    pub ingress: bool,
}

/// Everything a stack deploy asks for, produced by `stack::convert` from the files.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StackSpec {
    /// The stack (namespace) name.
    pub name: String,
    /// Services, by full name.
    pub services: Vec<ServiceSpec>,
    /// Secrets the stack creates.
    pub secrets: Vec<FileObjectSpec>,
    /// Configs the stack creates.
    pub configs: Vec<FileObjectSpec>,
    /// Networks the stack creates.
    pub networks: Vec<NetworkSpec>,
    /// Names of secrets that must already exist (`external: true`).
    pub external_secrets: Vec<String>,
    /// Names of configs that must already exist.
    pub external_configs: Vec<String>,
    /// Names of networks that must already exist.
    pub external_networks: Vec<String>,
}

/// The label that marks an object as part of a stack (docker's name, so docker tooling recognizes it).
pub const STACK_NAMESPACE_LABEL: &str = "com.docker.stack.namespace";

/// The label holding the version of a stack secret or config (`1`, `2`, ...): a changed file creates a new
/// version under the same name, and services move to it with a rolling update.
pub const OBJECT_VERSION_LABEL: &str = "com.swarm.version";

/// The version of a secret or config (1 when it carries no version label).
pub fn object_version(labels: &BTreeMap<String, String>) -> u64 {
    labels
        .get(OBJECT_VERSION_LABEL)
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}
