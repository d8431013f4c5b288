//! The gRPC contracts compiled from `proto/` (tonic + prost via protox), and the conversions between proto
//! messages and model types. Object payloads travel as the JSON of the model types, so `model` stays the one
//! definition of every object.
//!
//! Must not: hold logic beyond encoding and decoding.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// The control API (swarmctl → manager).
pub mod control {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("swarm.control");
}

/// The dispatcher API (agent → manager).
pub mod dispatcher {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("swarm.dispatcher");
}

/// Raft between managers (manager → manager).
pub mod raft {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("swarm.raft");
}

/// Encodes a model object for the wire.
pub fn to_json<T: Serialize>(value: &T) -> String {
    // Model types are plain data: serializing them cannot fail.
    serde_json::to_string(value).unwrap_or_default()
}

/// Decodes a model object from the wire, as a gRPC error on bad input.
pub fn from_json<T: DeserializeOwned>(what: &str, json: &str) -> Result<T, tonic::Status> {
    serde_json::from_str(json)
        .map_err(|e| tonic::Status::invalid_argument(format!("malformed {what}: {e}")))
}
