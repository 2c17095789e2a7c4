//! The update daemon: a pure state machine and decision function, the progress journal, and the driver
//! that executes decisions against the cluster, the host, the OS backend and systemd.

pub mod after_reboot;
pub mod bootstrap;
pub mod ca_trust;
pub mod certsync;
pub mod decide;
pub mod driver;
pub mod env;
pub mod firstboot;
pub mod gate;
pub mod journal;
pub mod mcn_status;
pub mod service;
pub mod state;
pub mod update;
pub mod verify;
