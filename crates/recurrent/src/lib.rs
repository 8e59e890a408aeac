//! recurrent: train Elman RNN, LSTM and GRU networks in Rust, exact to PyTorch.
//!
//! Layout of the crate (shape legend everywhere: B batch, T time, I input,
//! H hidden, G gates, D directions, L layers, O outputs):
//! - `cells`: the three classic cells and the element-wise minGRU and minLSTM, each step forward
//!   paired with its backward;
//! - `network`: stacked / bidirectional layers over padded batches: the one forward sweep
//!   that training (`rnn_forward`, keeping every step for `rnn_backward`) and inference share;
//! - `infer`: the forward-only `Runner` (weights packed once, only the latest state kept);
//! - `model`: embedding + network + Linear head, with PyTorch state_dict names;
//! - `loss`: MSE, cross-entropy, BCE with logits;
//! - `grad`: full and truncated backpropagation through time, and the online estimators;
//! - `optim`: SGD, RMSprop, Adagrad, Adam, AdamW, clipping, learning-rate schedules;
//! - `params`: the single (name, shape) table behind every flat buffer;
//! - `linalg`: the one module that calls the GEMM crate (with a naive twin);
//! - `reference`: plain, slow implementations the fast paths are tested against;
//! - `distributed`: data-parallel training across processes (MPI with the feature `mpi`).
//!
//! A forward and backward pass, and one Adam step:
//!
//! ```
//! use rand::SeedableRng;
//! use recurrent::optim::{Optimizer, OptimizerKind};
//! use recurrent::{Batch, CellKind, HeadKind, InitConfig, LossKind, Model, ModelConfig, RnnConfig, SeqInput, Targets};
//!
//! let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
//! let cfg = ModelConfig {
//!     rnn: RnnConfig::new(CellKind::Lstm, 3, 8),
//!     vocab: None,
//!     head: HeadKind::Last,
//!     out_size: 1,
//!     loss: LossKind::Mse,
//! };
//! let mut model = Model::<f32>::new(cfg, &InitConfig::default(), &mut rng).unwrap();
//! let (b, t) = (2, 5);
//! let x = vec![0.1f32; b * t * 3]; // [B, T, I]
//! let y = vec![0.5f32; b]; // [B, O]
//! let batch = Batch { input: SeqInput::Dense(&x), batch: b, seq_len: t, batch_first: true, lengths: Some(&[5, 3]) };
//! let mut grads = vec![0.0f32; model.num_params()];
//! let (loss, out) = model.loss_and_grad(&batch, Targets::Real(&y), None, &mut grads, Some(&mut rng)).unwrap();
//! assert!(loss.is_finite() && out.y.len() == b);
//! let mut opt = Optimizer::new(OptimizerKind::default_for("adam", 1e-3).unwrap(), model.num_params()).unwrap();
//! opt.step(&mut model.params, &grads).unwrap();
//! ```

#![warn(missing_docs)]

pub mod cells;
pub mod checkpoint;
pub mod choice;
pub mod diagnose;
pub mod distributed;
pub mod error;
pub mod float;
pub mod grad;
pub mod infer;
pub mod init;
pub mod linalg;
pub mod loss;
pub mod memory;
pub mod model;
pub mod network;
pub mod optim;
pub mod params;
pub mod reference;
pub mod simd;
pub mod train;

pub use cells::CellKind;
pub use error::{Error, Result};
pub use float::Float;
pub use loss::{LossKind, Targets, IGNORE_INDEX};
pub use model::{Batch, HeadKind, InitConfig, Model, ModelConfig, SeqInput};
pub use network::{RnnConfig, RnnState};

pub use choice::Choice;
#[doc(hidden)]
pub use serde as __serde;

/// The Rust code blocks of README.md, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
