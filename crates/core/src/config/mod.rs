//! The MachineConfig model: serde types for MachineConfig and MachineConfiguration, Ignition normalized
//! through `ignition-config`, data URLs decoded, image references and kernel arguments validated.
//!
//! Everything here is pure: bytes in, validated values or an [`InvalidInput`] naming the field out.

pub mod dataurl;
pub mod extensions;
pub mod ignition;
pub mod imageref;
pub mod kargs;
pub mod machineconfig;
pub mod paths;
pub mod policy;

use std::fmt;

pub use ignition::{Dropin, File, Ignition, Owner, Unit, User};
pub use imageref::ImageRef;
pub use machineconfig::{KernelType, MachineConfig};
pub use policy::{MachineConfiguration, NodeDisruptionPolicy, PolicyAction};

/// Input that cannot be used, with the field it concerns (`spec.config.storage.files[2].path`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidInput {
    /// Dotted path of the offending field; empty when the whole document is at fault.
    pub field: String,
    pub message: String,
}

impl InvalidInput {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for InvalidInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

impl std::error::Error for InvalidInput {}
