//! The Trainer: epochs or a step budget over a data source, any gradient
//! method, validation, early stopping, the best model kept, observers, and
//! one resumable run state.
//!
//! - [`config`]: [`TrainerConfig`], every choice typed, defaults in one place;
//! - [`data`]: the [`DataSource`] trait and the in-memory [`Examples`];
//! - [`eval`]: loss and metric on examples or a token stream;
//! - [`observe`]: the [`Observer`] trait (progress, metrics files, checkpoints);
//! - [`state`]: [`RunState`], the whole resumable state, saved as one file;
//! - [`trainer`]: [`Trainer`], the loop.

pub mod config;
pub mod data;
pub mod eval;
pub mod observe;
pub mod state;
pub mod trainer;

pub use config::{Clipping, Metric, OnNan, TrainerConfig};
pub use data::{make_batch, stream_batch, BatchBuf, DataSource, Examples, Inputs, TargetSet, TrainData};
pub use eval::{evaluate, evaluate_data, evaluate_stream, Evaluation};
pub use observe::{EpochEnd, MetricsLine, Observer, Observers, Silent, StepInfo};
pub use state::{Counters, RunState};
pub use trainer::{FitReport, Trainer};
