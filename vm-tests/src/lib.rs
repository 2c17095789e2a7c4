//! vm-tests: end-to-end tests in ostree-booted Debian VMs under QEMU (software emulation).
//!
//! - [`image`] builds the guest: a cached Debian base commit, a layer with the files under test, an
//!   ostree deployment written to an ext4 disk image (no mounts, loop devices or KVM);
//! - [`vm`] boots copies of it, playing bootloader between boots ([`disk`], [`bls`]), runs commands
//!   in the guest and cuts the power;
//! - [`scenarios`] are the tests, run by the `vm-tests` binary (`vm-tests/run`).

pub mod bls;
pub mod cluster;
pub mod cmd;
pub mod disk;
pub mod http;
pub mod image;
pub mod layout;
pub mod osimages;
pub mod ostree_status;
pub mod overlay;
pub mod qemu;
pub mod scenarios;
pub mod serial;
pub mod tools;
pub mod vm;
pub mod workspace;
