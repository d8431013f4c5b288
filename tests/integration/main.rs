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
mod netlab;
mod netplane;
mod netsvc;
mod network_cli;
mod partition;
mod rolling;
mod service_net;
mod service_net_docker;
mod service_net_multi;
mod sim;
mod sim_update;
mod stack_cli;
mod stack_diff;
mod storage;
