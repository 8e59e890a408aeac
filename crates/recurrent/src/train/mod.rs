//! The Trainer: epochs or a step budget over a data source, any gradient
//! method, validation, early stopping, the best model kept, observers, and
//! one resumable run state.

pub mod config;

pub use config::{Clipping, Metric, OnNan, TrainerConfig};
