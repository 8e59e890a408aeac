//! Plain reference implementations: one sequence at a time, one unit at a
//! time, straight from PyTorch's equations, no fused products. Slow on
//! purpose; the fast paths in `network` are tested against them.

use crate::cells::CellKind;
use crate::model::Model;

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// Row `r` of W [rows, cols] times v.
fn dot_row(w: &[f64], cols: usize, r: usize, v: &[f64]) -> f64 {
    (0..cols).map(|k| w[r * cols + k] * v[k]).sum()
}

/// One step of a cell for one sequence, written out gate by gate.
#[allow(clippy::too_many_arguments)]
pub fn cell_step(
    cell: CellKind,
    w_ih: &[f64],
    w_hh: &[f64],
    b_ih: Option<&[f64]>,
    b_hh: Option<&[f64]>,
    x: &[f64],
    h: &[f64],
    c: &[f64],
) -> (Vec<f64>, Vec<f64>) {
    let (n, i) = (h.len(), x.len());
    // pre-activation of row r: input part and recurrent part (each with its bias)
    let px = |r: usize| dot_row(w_ih, i, r, x) + b_ih.map_or(0.0, |b| b[r]);
    let ph = |r: usize| dot_row(w_hh, n, r, h) + b_hh.map_or(0.0, |b| b[r]);
    match cell {
        CellKind::RnnTanh => ((0..n).map(|j| (px(j) + ph(j)).tanh()).collect(), vec![]),
        CellKind::RnnRelu => ((0..n).map(|j| (px(j) + ph(j)).max(0.0)).collect(), vec![]),
        CellKind::Lstm => {
            let mut hn = vec![0.0; n];
            let mut cn = vec![0.0; n];
            for j in 0..n {
                let ig = sigmoid(px(j) + ph(j));
                let fg = sigmoid(px(n + j) + ph(n + j));
                let gg = (px(2 * n + j) + ph(2 * n + j)).tanh();
                let og = sigmoid(px(3 * n + j) + ph(3 * n + j));
                cn[j] = fg * c[j] + ig * gg;
                hn[j] = og * cn[j].tanh();
            }
            (hn, cn)
        }
        CellKind::MinGru => {
            // Rows: candidate h~ then gate z (`to_hidden_and_gate`); g(x) = x + 0.5 (x >= 0), σ(x) (x < 0).
            let g = |v: f64| if v >= 0.0 { v + 0.5 } else { sigmoid(v) };
            let hn = (0..n)
                .map(|j| {
                    let z = sigmoid(px(n + j));
                    (1.0 - z) * h[j] + z * g(px(j))
                })
                .collect();
            (hn, vec![])
        }
        CellKind::MinLstm => {
            // Rows: candidate h~, forget f, input i (`to_hidden_and_f_i_gate`).
            let g = |v: f64| if v >= 0.0 { v + 0.5 } else { sigmoid(v) };
            let hn = (0..n)
                .map(|j| {
                    let (f, i) = (sigmoid(px(n + j)), sigmoid(px(2 * n + j)));
                    (f * h[j] + i * g(px(j))) / (f + i)
                })
                .collect();
            (hn, vec![])
        }
        CellKind::Gru => {
            let mut hn = vec![0.0; n];
            for j in 0..n {
                let r = sigmoid(px(j) + ph(j));
                let z = sigmoid(px(n + j) + ph(n + j));
                let nn = (px(2 * n + j) + r * ph(2 * n + j)).tanh();
                hn[j] = (1.0 - z) * nn + z * h[j];
            }
            (hn, vec![])
        }
    }
}

/// Forward pass of the recurrent stack of `model` without dropout, one
/// sequence at a time. `x` [T, B, I] time-major; `h0`, `c0` [L*D, B, H].
/// Returns (output [T, B, D*H] zero past each length, h_n, c_n).
pub fn rnn_forward_reference(
    model: &Model<f64>,
    x: &[f64],
    t_len: usize,
    batch: usize,
    lengths: &[usize],
    h0: &[f64],
    c0: &[f64],
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let cfg = &model.cfg.rnn;
    let (h, nd) = (cfg.hidden_size, cfg.dirs());
    let lstm = cfg.cell == CellKind::Lstm;
    let mut hn = vec![0.0; cfg.num_layers * nd * batch * h];
    let mut cn = if lstm { hn.clone() } else { vec![] };
    let mut layer_in: Vec<Vec<Vec<f64>>> = (0..batch)
        .map(|b| {
            (0..t_len)
                .map(|t| x[(t * batch + b) * cfg.input_size..(t * batch + b + 1) * cfg.input_size].to_vec())
                .collect()
        })
        .collect();
    for l in 0..cfg.num_layers {
        let mut layer_out = vec![vec![vec![0.0; nd * h]; t_len]; batch];
        for d in 0..nd {
            let dp = model.dirs[l * nd + d];
            let w_ih = model.table.view(&model.params, dp.w_ih);
            let w_hh = dp.w_hh.map_or(&[][..], |w| model.table.view(&model.params, w));
            let b_ih = dp.bias.map(|b| model.table.view(&model.params, b.ih));
            let b_hh = dp.bias.and_then(|b| b.hh).map(|hh| model.table.view(&model.params, hh));
            for b in 0..batch {
                let k = ((l * nd + d) * batch + b) * h;
                let mut hs = h0.get(k..k + h).map_or(vec![0.0; h], |v| v.to_vec());
                let mut cs = if lstm { c0.get(k..k + h).map_or(vec![0.0; h], |v| v.to_vec()) } else { vec![] };
                let steps: Vec<usize> =
                    if d == 0 { (0..lengths[b]).collect() } else { (0..lengths[b]).rev().collect() };
                for t in steps {
                    let (a, c) = cell_step(cfg.cell, w_ih, w_hh, b_ih, b_hh, &layer_in[b][t], &hs, &cs);
                    hs = a;
                    cs = c;
                    layer_out[b][t][d * h..(d + 1) * h].copy_from_slice(&hs);
                }
                hn[k..k + h].copy_from_slice(&hs);
                if lstm {
                    cn[k..k + h].copy_from_slice(&cs);
                }
            }
        }
        layer_in = layer_out;
    }
    let dh = nd * h;
    let mut out = vec![0.0; t_len * batch * dh];
    for b in 0..batch {
        for t in 0..t_len {
            out[(t * batch + b) * dh..(t * batch + b + 1) * dh].copy_from_slice(&layer_in[b][t]);
        }
    }
    (out, hn, cn)
}
