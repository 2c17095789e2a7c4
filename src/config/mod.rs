//! MachineConfig model.
