//! machine-config-daemon: the on-node half of image mode for ostree-booted Kubernetes nodes.
//!
//! Data flows one way: observe → [`plan`] (pure) → execute (side effects behind small traits) → report.

pub use machine_config_core::{config, plan};

pub mod cli;
pub mod cluster;
pub mod daemon;
pub mod host;
pub mod logging;
pub mod metrics;
pub mod os;
pub mod systemd;
