//! Helpers shared by the integration tests.
#![allow(dead_code)]

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use recurrent::{CellKind, HeadKind, InitConfig, LossKind, Model, ModelConfig, RnnConfig};

pub type Rng64 = ChaCha8Rng;

pub fn rng(seed: u64) -> Rng64 {
    ChaCha8Rng::seed_from_u64(seed)
}

/// |a - b| / max(|a|, |b|, 1e-12)
pub fn rel_err(a: f64, b: f64) -> f64 {
    (a - b).abs() / a.abs().max(b.abs()).max(1e-12)
}

/// Derivative of `f` along `x[k]` by finite differences: the five-point
/// central stencil (error O(h^4)) at steps h and 2h, combined by Richardson
/// extrapolation (error O(h^6)). Differences are formed before they are
/// scaled, so a coordinate that does not affect `f` gives exactly 0.
pub fn fd5(x: &mut [f64], k: usize, h: f64, mut f: impl FnMut(&[f64]) -> f64) -> f64 {
    fd5_smooth(x, k, h, |x| (f(x), 0)).expect("a constant pattern never crosses a kink")
}

/// Like `fd5`, for a piecewise-smooth `f` that also returns the pattern of
/// its pieces (for ReLU: which units are active). Returns `None` when the
/// stencil crosses a kink (the pattern changes), where finite differences do
/// not approximate the derivative.
pub fn fd5_smooth(x: &mut [f64], k: usize, h: f64, mut f: impl FnMut(&[f64]) -> (f64, u64)) -> Option<f64> {
    let mut patterns = Vec::new();
    let x0 = x[k];
    let mut at = |d: f64, x: &mut [f64]| {
        x[k] = x0 + d;
        let (v, pat) = f(x);
        x[k] = x0;
        patterns.push(pat);
        v
    };
    let mut stencil = |h: f64, x: &mut [f64]| {
        let (p2, p1, m1, m2) = (at(2.0 * h, x), at(h, x), at(-h, x), at(-2.0 * h, x));
        (8.0 * (p1 - m1) - (p2 - m2)) / (12.0 * h)
    };
    let d1 = stencil(h, x);
    let d2 = stencil(2.0 * h, x);
    let centre = f(x).1;
    if patterns.iter().any(|&p| p != centre) {
        return None;
    }
    Some(d1 + (d1 - d2) / 15.0)
}

/// A fingerprint of the pieces of a piecewise-smooth forward pass: which
/// ReLU units are active, and for minGRU / minLSTM on which side of 0 each
/// candidate's pre-activation lies (g(x) = x + 0.5 or σ(x), whose slope
/// jumps at 0); 0 for smooth cells.
pub fn relu_pattern(model: &Model<f64>, cache: &recurrent::model::ModelCache<f64>) -> u64 {
    use std::hash::{Hash, Hasher};
    let cell = model.cfg.rnn.cell;
    let h = model.cfg.rnn.hidden_size;
    let mut hs = std::collections::hash_map::DefaultHasher::new();
    match cell {
        CellKind::RnnRelu => {
            for d in &cache.rnn.dirs {
                for v in &d.act {
                    (*v > 0.0).hash(&mut hs);
                }
            }
        }
        CellKind::MinGru | CellKind::MinLstm => {
            let g = cell.gates() * h;
            for d in &cache.rnn.dirs {
                for row in d.act.chunks_exact(g) {
                    for v in &row[..h] {
                        (*v >= 0.5).hash(&mut hs);
                    }
                }
            }
        }
        _ => return 0,
    }
    hs.finish()
}

pub fn model_cfg(
    cell: CellKind,
    i: usize,
    h: usize,
    layers: usize,
    bidir: bool,
    head: HeadKind,
    out: usize,
    loss: LossKind,
) -> ModelConfig {
    ModelConfig {
        rnn: RnnConfig {
            cell,
            input_size: i,
            hidden_size: h,
            num_layers: layers,
            bidirectional: bidir,
            bias: true,
            dropout: 0.0,
        },
        vocab: None,
        head,
        out_size: out,
        loss,
    }
}

/// A model whose parameters are drawn U(-scale, scale), so gradients are not tiny.
pub fn random_model(cfg: ModelConfig, seed: u64, scale: f64) -> Model<f64> {
    let mut r = rng(seed);
    let mut m = Model::<f64>::new(cfg, &InitConfig::default(), &mut r).unwrap();
    for p in m.params.iter_mut() {
        *p = r.gen_range(-scale..scale);
    }
    m
}

pub fn randn_vec(r: &mut Rng64, n: usize, scale: f64) -> Vec<f64> {
    (0..n).map(|_| r.gen_range(-scale..scale)).collect()
}

/// Every cell.
pub const ALL_CELLS: [CellKind; 6] =
    [CellKind::RnnTanh, CellKind::RnnRelu, CellKind::Lstm, CellKind::Gru, CellKind::MinGru, CellKind::MinLstm];

/// The cells with recurrent weights W_hh (PyTorch's).
pub const CLASSIC_CELLS: [CellKind; 4] = [CellKind::RnnTanh, CellKind::RnnRelu, CellKind::Lstm, CellKind::Gru];
