//! How much memory a model configuration implies, computed from its sizes
//! alone (closed forms in `u128`, no allocation, no loop over layers), so
//! that sizes from untrusted places (flags, checkpoint metadata) can be
//! checked against a limit before anything is allocated.
//!
//! ```
//! use recurrent::memory::{estimate, Workload};
//! use recurrent::{CellKind, HeadKind, LossKind, ModelConfig, RnnConfig};
//! let cfg = ModelConfig {
//!     rnn: RnnConfig::new(CellKind::Lstm, 8, 64),
//!     vocab: None,
//!     head: HeadKind::Last,
//!     out_size: 1,
//!     loss: LossKind::Mse,
//! };
//! let e = estimate(&cfg, &Workload { batch: 32, seq_len: 100, elem_bytes: 4, optimizer_slots: 2 });
//! assert_eq!(e.params, 4 * 64 * (8 + 64 + 2) + 64 + 1);
//! assert!(e.total() > e.param_bytes);
//! e.check("training", 1 << 30).unwrap();
//! ```

use crate::error::{Error, Result};
use crate::model::{HeadKind, ModelConfig};

/// The default memory limit of the command line (bytes): 8 GiB.
pub const DEFAULT_LIMIT_BYTES: u128 = 8 << 30;

/// What the model is used for: the batch `B` and padded length `T` of one
/// step, the bytes of one value (4 for f32, 8 for f64) and the optimizer's
/// slots per parameter (0 for inference or SGD, 1 for momentum, RMSprop or
/// Adagrad, 2 for Adam and AdamW).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Workload {
    /// B: sequences per batch.
    pub batch: usize,
    /// T: steps per sequence (the longest).
    pub seq_len: usize,
    /// Bytes per value (4 for f32, 8 for f64).
    pub elem_bytes: usize,
    /// Optimizer state buffers of P values each (0 for inference).
    pub optimizer_slots: usize,
}

impl Workload {
    /// Inference (no gradients, no optimizer) of `batch` x `seq_len` in f32.
    pub fn inference(batch: usize, seq_len: usize) -> Self {
        Workload { batch, seq_len, elem_bytes: 4, optimizer_slots: 0 }
    }
}

/// The estimate: parameter count and bytes per part. Every field is exact
/// arithmetic on the sizes (saturating at `u128::MAX`), so an absurd size
/// gives an absurd number rather than an overflow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryEstimate {
    /// Number of scalar parameters (embedding, recurrent layers, head).
    pub params: u128,
    /// Bytes of the parameters.
    pub param_bytes: u128,
    /// Bytes of their gradients (0 for inference).
    pub grad_bytes: u128,
    /// Bytes of the optimizer's slots.
    pub optimizer_bytes: u128,
    /// Bytes of the per-batch caches of a forward and backward pass over
    /// `B x T`: inputs, every step's gates, hidden and cell states and
    /// layer outputs, and the head's outputs.
    pub cache_bytes: u128,
}

impl MemoryEstimate {
    /// All parts together.
    pub fn total(&self) -> u128 {
        self.param_bytes
            .saturating_add(self.grad_bytes)
            .saturating_add(self.optimizer_bytes)
            .saturating_add(self.cache_bytes)
    }

    /// [`Error::Memory`] naming `what`, the need and the limit when the
    /// total exceeds `limit` bytes.
    pub fn check(&self, what: &str, limit: u128) -> Result<()> {
        check_bytes(what, self.total(), limit)
    }
}

/// [`Error::Memory`] when `need` bytes exceed `limit`.
pub fn check_bytes(what: &str, need: u128, limit: u128) -> Result<()> {
    if need > limit {
        return Err(Error::Memory { what: what.to_string(), need, limit });
    }
    Ok(())
}

fn mul(a: u128, b: u128) -> u128 {
    a.saturating_mul(b)
}

fn add(a: u128, b: u128) -> u128 {
    a.saturating_add(b)
}

/// Number of scalar parameters of `cfg`: the embedding `V x I`, per layer
/// and direction `G*H x I_l + G*H x H` weights and two `G*H` biases (layer 0
/// reads `I`, the others `D*H`; cells without recurrent weights, minGRU and
/// minLSTM, have neither `G*H x H` nor the second bias), and the head
/// `O x D*H + O`. A closed form:
/// `num_layers` = 10^9 costs nothing to evaluate.
pub fn param_count(cfg: &ModelConfig) -> u128 {
    let r = &cfg.rnn;
    let (i, h, l, d) = (r.input_size as u128, r.hidden_size as u128, r.num_layers as u128, r.dirs() as u128);
    let gh = mul(r.cell.gates() as u128, h);
    let rec = r.cell.recurrent();
    let bias = if r.bias { mul(if rec { 2 } else { 1 }, gh) } else { 0 };
    let whh = if rec { mul(gh, h) } else { 0 };
    let per_dir = |input: u128| add(add(mul(gh, input), whh), bias);
    let first = if l > 0 { mul(d, per_dir(i)) } else { 0 };
    let rest = mul(mul(l.saturating_sub(1), d), per_dir(mul(d, h)));
    let emb = cfg.vocab.map_or(0, |v| mul(v as u128, i));
    let o = cfg.out_size as u128;
    let head = add(mul(o, mul(d, h)), o);
    add(add(add(emb, first), rest), head)
}

/// The memory `cfg` implies for `work` (see [`MemoryEstimate`]).
pub fn estimate(cfg: &ModelConfig, work: &Workload) -> MemoryEstimate {
    let params = param_count(cfg);
    let e = work.elem_bytes as u128;
    let training = work.optimizer_slots > 0;
    let r = &cfg.rnn;
    let (i, h, l, d) = (r.input_size as u128, r.hidden_size as u128, r.num_layers as u128, r.dirs() as u128);
    let g = r.cell.gates() as u128;
    let bt = mul(work.batch as u128, work.seq_len as u128);
    // Per step, layer and direction: the gates (G*H), the hidden and the
    // cell state (2*H) and the layer's output (H); plus the inputs and the
    // head's outputs (every step, or the last one).
    let per_step = mul(mul(l, d), mul(add(g, 3), h));
    let outputs = match cfg.head {
        HeadKind::Every => mul(bt, cfg.out_size as u128),
        HeadKind::Last => mul(work.batch as u128, cfg.out_size as u128),
    };
    let mut cache = add(add(mul(bt, per_step), mul(bt, i)), outputs);
    if training {
        // The backward pass holds gradients of the same caches.
        cache = mul(cache, 2);
    }
    MemoryEstimate {
        params,
        param_bytes: mul(params, e),
        grad_bytes: if training { mul(params, e) } else { 0 },
        optimizer_bytes: mul(mul(params, work.optimizer_slots as u128), e),
        cache_bytes: mul(cache, e),
    }
}

/// A short description of the sizes of `cfg` for messages
/// (`lstm input 8, hidden 64 x 2 layers, output 1`).
pub fn describe(cfg: &ModelConfig) -> String {
    let r = &cfg.rnn;
    format!(
        "{} input {}, hidden {} x {} layer(s){}, output {}{}",
        r.cell.name(),
        r.input_size,
        r.hidden_size,
        r.num_layers,
        if r.bidirectional { ", bidirectional" } else { "" },
        cfg.out_size,
        cfg.vocab.map_or(String::new(), |v| format!(", vocabulary {v}"))
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::float::Float;
    use crate::{CellKind, LossKind, Model, RnnConfig};

    fn cfg(cell: CellKind, i: usize, h: usize, layers: usize, bi: bool, vocab: Option<usize>) -> ModelConfig {
        let mut rnn = RnnConfig::new(cell, i, h);
        rnn.num_layers = layers;
        rnn.bidirectional = bi;
        ModelConfig { rnn, vocab, head: HeadKind::Every, out_size: 3, loss: LossKind::CrossEntropy }
    }

    fn count<F: Float>(c: &ModelConfig) -> usize {
        Model::<F>::zeros(c.clone()).unwrap().num_params()
    }

    #[test]
    fn param_count_matches_the_models_table() {
        for cell in [CellKind::RnnTanh, CellKind::Lstm, CellKind::Gru, CellKind::MinGru, CellKind::MinLstm] {
            for (layers, bi, vocab) in [(1, false, None), (3, true, Some(11)), (2, false, Some(5)), (1, true, None)] {
                let mut c = cfg(cell, 7, 5, layers, bi, vocab);
                assert_eq!(param_count(&c), count::<f32>(&c) as u128, "{c:?}");
                c.rnn.bias = false;
                assert_eq!(param_count(&c), count::<f32>(&c) as u128, "{c:?}");
            }
        }
    }

    #[test]
    fn absurd_sizes_give_absurd_estimates_without_allocating() {
        let mut c = cfg(CellKind::Lstm, 4, 65536, 1_000_000_000, true, Some(usize::MAX));
        c.out_size = usize::MAX;
        let e = estimate(&c, &Workload { batch: usize::MAX, seq_len: usize::MAX, elem_bytes: 4, optimizer_slots: 2 });
        assert!(e.total() > DEFAULT_LIMIT_BYTES);
        let err = e.check("training", DEFAULT_LIMIT_BYTES).unwrap_err();
        assert!(err.is_user_error());
        let text = err.to_string();
        assert!(text.starts_with("training needs about ") && text.ends_with("the memory limit is 8.0 GiB"), "{text}");
    }

    #[test]
    fn training_costs_more_than_inference() {
        let c = cfg(CellKind::Gru, 8, 32, 2, false, None);
        let inf = estimate(&c, &Workload::inference(16, 50));
        let tr = estimate(&c, &Workload { batch: 16, seq_len: 50, elem_bytes: 4, optimizer_slots: 2 });
        assert_eq!(inf.grad_bytes, 0);
        assert_eq!(inf.optimizer_bytes, 0);
        assert_eq!(tr.grad_bytes, tr.param_bytes);
        assert_eq!(tr.optimizer_bytes, 2 * tr.param_bytes);
        assert!(tr.cache_bytes > inf.cache_bytes);
        // Caches grow linearly with B x T.
        let twice = estimate(&c, &Workload::inference(32, 50));
        assert!(twice.cache_bytes > inf.cache_bytes * 19 / 10);
    }
}
