//! The functional core of machine-config-daemon: the MachineConfig model and the pure update planner.
//!
//! No I/O lives here, by construction: this crate has no filesystem, network, D-Bus or ostree dependency.
//! Bytes in, validated values or a precise error out; two configs in, a [`plan::Plan`] out.

pub mod config;
pub mod plan;
