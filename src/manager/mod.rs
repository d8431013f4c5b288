//! Leader-side components: the control API, the dispatcher, the driver that runs the reconcilers, and the
//! proposer they all write through.

pub mod controlapi;
pub mod deploy;
pub mod dispatcher;
pub mod proposer;
