//! recurrent: train Elman RNN, LSTM and GRU networks in Rust, exact to PyTorch.
//!
//! Layout of the crate (shape legend everywhere: B batch, T time, I input,
//! H hidden, G gates, D directions, L layers, O outputs):
//! - `cells`: the three cells, each step forward paired with its backward;
//! - `network`: stacked / bidirectional layers over padded batches (`rnn_forward`, `rnn_backward`);
//! - `model`: embedding + network + Linear head, with PyTorch state_dict names;
//! - `loss`: MSE, cross-entropy, BCE with logits;
//! - `bptt`: full and truncated backpropagation through time;
//! - `optim`: SGD, RMSprop, Adagrad, Adam, AdamW, clipping, learning-rate schedules;
//! - `params`: the single (name, shape) table behind every flat buffer;
//! - `linalg`: the one module that calls the GEMM crate (with a naive twin);
//! - `reference`: plain, slow implementations the fast paths are tested against;
//! - `bench`: the benchmark configurations shared with the PyTorch peer.

pub mod bench;
pub mod bptt;
pub mod cells;
pub mod checkpoint;
pub mod data;
pub mod diagnose;
pub mod error;
pub mod estimator;
pub mod float;
pub mod init;
pub mod linalg;
pub mod loss;
pub mod model;
pub mod network;
pub mod online;
pub mod optim;
pub mod params;
pub mod plot;
pub mod reference;
pub mod reproduce;
pub mod train;

pub use cells::CellKind;
pub use error::{Error, Result};
pub use float::Float;
pub use loss::{LossKind, Targets, IGNORE_INDEX};
pub use model::{Batch, HeadKind, InitConfig, Model, ModelConfig, SeqInput};
pub use network::{RnnConfig, RnnState};
