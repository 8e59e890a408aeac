//! Instruments for vanishing and exploding gradients: how far back the
//! error signal reaches (||dL/dh_t|| for every step and layer), the spectral
//! radius and largest singular value of each recurrent weight block, and
//! how saturated the gates are at each step.

use crate::cells::CellKind;
use crate::error::Result;
use crate::float::Float;
use crate::loss::Targets;
use crate::model::{Batch, Model};
use rand::{Rng, SeedableRng};
use serde::Serialize;

/// What `diagnose` measures for one (layer, direction).
#[derive(Clone, Debug, Serialize)]
pub struct LayerDiagnosis {
    /// Layer index l.
    pub layer: usize,
    /// 0 forward, 1 reverse.
    pub direction: usize,
    /// Mean over the batch of ||dL/dh_t||, t = 0..T-1 (time order).
    pub grad_norms: Vec<f64>,
    /// ||dL/dh_0|| / ||dL/dh_{T-1}||: below 1 the signal fades going back, above 1 it grows.
    pub ratio_first_last: f64,
    /// Per gate block (in the weight's row order): spectral radius of the H x H block of W_hh.
    pub spectral_radius: Vec<f64>,
    /// Per gate block: largest singular value.
    pub max_singular: Vec<f64>,
    /// Fraction of gate units saturated at each step (sigmoid < 0.05 or > 0.95,
    /// tanh |a| > 0.95, relu exactly 0), over the sequences still running.
    pub saturation: Vec<f64>,
}

/// The whole report.
#[derive(Clone, Debug, Serialize)]
pub struct Diagnosis {
    /// The cell's name.
    pub cell: String,
    /// The batch's loss.
    pub loss: f64,
    /// One entry per (layer, direction), index l*D + d.
    pub layers: Vec<LayerDiagnosis>,
}

/// Gate names in weight row order, for the table.
pub fn gate_names(cell: CellKind) -> &'static [&'static str] {
    match cell {
        CellKind::RnnTanh | CellKind::RnnRelu => &["h"],
        CellKind::Lstm => &["i", "f", "g", "o"],
        CellKind::Gru => &["r", "z", "n"],
        CellKind::MinGru => &["h", "z"],
        CellKind::MinLstm => &["h", "f", "i"],
    }
}

/// Largest singular value of a row-major n x n matrix, by power iteration on WᵀW.
pub fn max_singular(w: &[f64], n: usize) -> f64 {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let mut v: Vec<f64> = (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let mut sigma = 0.0;
    for _ in 0..300 {
        let u: Vec<f64> = (0..n).map(|i| (0..n).map(|k| w[i * n + k] * v[k]).sum()).collect();
        let mut z: Vec<f64> = (0..n).map(|k| (0..n).map(|i| w[i * n + k] * u[i]).sum()).collect();
        let nz = z.iter().map(|x| x * x).sum::<f64>().sqrt();
        if nz == 0.0 {
            return 0.0;
        }
        z.iter_mut().for_each(|x| *x /= nz);
        sigma = nz.sqrt();
        v = z;
    }
    sigma
}

/// Spectral radius of a row-major n x n matrix: the growth rate of ||W^k v||
/// (Gelfand's formula), which also handles complex leading eigenvalues.
pub fn spectral_radius(w: &[f64], n: usize) -> f64 {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
    let mut v: Vec<f64> = (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let norm = |x: &[f64]| x.iter().map(|a| a * a).sum::<f64>().sqrt();
    let n0 = norm(&v);
    v.iter_mut().for_each(|x| *x /= n0);
    // Skip a transient, then average the log growth over many steps.
    let (warm, k) = (200, 400);
    let mut log_growth = 0.0;
    for step in 0..warm + k {
        let u: Vec<f64> = (0..n).map(|i| (0..n).map(|j| w[i * n + j] * v[j]).sum()).collect();
        let nu = norm(&u);
        if nu == 0.0 {
            return 0.0;
        }
        if step >= warm {
            log_growth += nu.ln();
        }
        v = u.into_iter().map(|x| x / nu).collect();
    }
    (log_growth / k as f64).exp()
}

/// Runs the model forward and backward on one batch and measures it.
pub fn diagnose<F: Float>(model: &Model<F>, batch: &Batch<F>, targets: Targets<F>) -> Result<Diagnosis> {
    let (out, cache) = model.forward::<rand_chacha::ChaCha8Rng>(batch, None, None)?;
    let (loss, dy) = model.loss(&out.y, targets, &cache)?;
    let mut grads = vec![F::zero(); model.num_params()];
    let g = model.backward(&cache, &dy, None, &mut grads, false)?;
    let cfg = &model.cfg.rnn;
    let (t, b, h, nd) = (cache.rnn.seq_len, cache.rnn.batch, cfg.hidden_size, cfg.dirs());
    let gates = cfg.cell.gates();
    let mut layers = Vec::new();
    for l in 0..cfg.num_layers {
        for d in 0..nd {
            let k = l * nd + d;
            let norms = g.dh_norms[k * t..(k + 1) * t].to_vec();
            // Cells without recurrent weights (minGRU, minLSTM) have no blocks to measure.
            let whh: Vec<f64> = model.dirs[k]
                .w_hh
                .map(|w| model.table.view(&model.params, w))
                .unwrap_or(&[])
                .iter()
                .map(|v| v.to_f64().unwrap_or(f64::NAN))
                .collect();
            let blocks: Vec<&[f64]> =
                if whh.is_empty() { vec![] } else { (0..gates).map(|gi| &whh[gi * h * h..(gi + 1) * h * h]).collect() };
            // Saturation per step, in time order, over the rows still running.
            let act = &cache.rnn.dirs[k].act;
            let mut saturation = vec![0.0; t];
            for (tt, sat) in saturation.iter_mut().enumerate() {
                let s = if d == 0 { tt } else { t - 1 - tt };
                let (mut n, mut hit) = (0usize, 0usize);
                for r in (0..b).filter(|&r| tt < cache.rnn.lengths[r]) {
                    for gi in 0..gates {
                        for j in 0..h {
                            let a = act[(s * b + r) * gates * h + gi * h + j].to_f64().unwrap_or(f64::NAN);
                            n += 1;
                            hit += usize::from(saturated(cfg.cell, gi, a));
                        }
                    }
                }
                *sat = if n > 0 { hit as f64 / n as f64 } else { 0.0 };
            }
            layers.push(LayerDiagnosis {
                layer: l,
                direction: d,
                ratio_first_last: norms[0] / norms[t - 1].max(1e-300),
                grad_norms: norms,
                spectral_radius: blocks.iter().map(|w| spectral_radius(w, h)).collect(),
                max_singular: blocks.iter().map(|w| max_singular(w, h)).collect(),
                saturation,
            });
        }
    }
    Ok(Diagnosis { cell: cfg.cell.name().into(), loss: loss.to_f64().unwrap_or(f64::NAN), layers })
}

/// Whether an activation of gate `gate` is saturated.
fn saturated(cell: CellKind, gate: usize, a: f64) -> bool {
    let tanh_gate = match cell {
        CellKind::RnnTanh => true,
        CellKind::RnnRelu => return a == 0.0,
        CellKind::Lstm => gate == crate::cells::LstmGate::G as usize,
        CellKind::Gru => gate == crate::cells::GruGate::N as usize,
        // The candidate g(x) is unbounded above; it saturates only on its sigmoid side, near 0.
        CellKind::MinGru | CellKind::MinLstm if gate == 0 => return a < 0.05,
        CellKind::MinGru | CellKind::MinLstm => false,
    };
    if tanh_gate {
        a.abs() > 0.95
    } else {
        !(0.05..=0.95).contains(&a)
    }
}

/// A compact text table of a diagnosis.
pub fn table(d: &Diagnosis) -> String {
    let mut s = format!("cell {}  loss {:.5}\n", d.cell, d.loss);
    s.push_str(
        "layer dir  |dL/dh_0|   |dL/dh_T-1|  ratio 0/T-1   gate  spectral radius  max singular  mean saturation\n",
    );
    let names = gate_names(CellKind::parse(&d.cell).unwrap_or(CellKind::RnnTanh));
    for l in &d.layers {
        let t = l.grad_norms.len();
        let mean_sat = l.saturation.iter().sum::<f64>() / t.max(1) as f64;
        for (gi, name) in names.iter().enumerate() {
            if gi == 0 {
                s.push_str(&format!(
                    "{:>5} {:>3}  {:>10.3e}  {:>11.3e}  {:>11.3e}  {:>5}  {:>15.4}  {:>12.4}  {:>15.3}\n",
                    l.layer,
                    l.direction,
                    l.grad_norms[0],
                    l.grad_norms[t - 1],
                    l.ratio_first_last,
                    name,
                    l.spectral_radius.get(gi).copied().unwrap_or(f64::NAN),
                    l.max_singular.get(gi).copied().unwrap_or(f64::NAN),
                    mean_sat
                ));
            } else {
                s.push_str(&format!(
                    "{:>52}  {:>5}  {:>15.4}  {:>12.4}\n",
                    "",
                    name,
                    l.spectral_radius.get(gi).copied().unwrap_or(f64::NAN),
                    l.max_singular.get(gi).copied().unwrap_or(f64::NAN)
                ));
            }
        }
    }
    s
}
