//! The application behind the `recurrent` command: tasks and their data, the
//! training run with its files (configuration, checkpoints, metrics, plots),
//! evaluation, prediction and generation from checkpoints, the reproduction
//! experiments and the benchmark configurations. The engine is the
//! `recurrent` crate; the data readers are `recurrent-data`.

pub mod bench;
pub mod fuzz_targets;
pub mod plot;
pub mod reproduce;
pub mod train;
