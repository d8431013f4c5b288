//! The one integration-test crate (one binary keeps link time down): modules run the real `swarmctl` (and,
//! later, real `swarmd` processes on loopback) the way a user would.

mod autolock;
mod ca_rotate;
mod cluster;
mod gitops;
mod ha;
mod isolation;
mod join;
mod join_tokens;
mod layout;
mod limits;
mod multinode;
mod netplane;
mod netsvc;
mod partition;
mod rolling;
mod sim;
mod sim_update;
mod stack_cli;
mod stack_diff;
mod storage;
