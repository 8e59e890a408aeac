//! The one gradient-estimator interface: the same model, loss and optimizer
//! train with every estimator chosen by name.

mod common;
use common::*;
use recurrent::grad::{train_batch, EstimatorConfig};
use recurrent::optim::{Optimizer, OptimizerKind};
use recurrent::{Batch, CellKind, HeadKind, LossKind, SeqInput, Targets};

#[test]
fn every_estimator_trains_the_same_model_by_name() {
    let (b, t, i) = (4, 6, 2);
    let mut r = rng(5);
    let x = randn_vec(&mut r, b * t * i, 1.0);
    // Target: the sum of the first input channel (batch-first [B, 1]).
    let y: Vec<f64> = (0..b).map(|s| (0..t).map(|k| x[(s * t + k) * i]).sum::<f64>() * 0.3).collect();
    let batch = Batch { input: SeqInput::Dense(&x), batch: b, seq_len: t, batch_first: true, lengths: None };
    let base = random_model(model_cfg(CellKind::Gru, i, 5, 2, false, HeadKind::Last, 1, LossKind::Mse), 8, 0.5);
    let mut grads_by = Vec::new();
    for name in ["bptt", "tbptt", "rtrl", "uoro", "snap1", "snap2"] {
        let cfg = EstimatorConfig::new(name, 3, 6, 1 << 30).unwrap();
        let mut model = base.clone();
        let mut opt = Optimizer::new(OptimizerKind::default_for("adam", 0.02).unwrap(), model.num_params()).unwrap();
        let mut grads = Vec::new();
        let mut first = None;
        let mut last = 0.0;
        for step in 0..150 {
            let losses = train_batch(&mut model, &batch, Targets::Real(&y), &cfg, &mut r, &mut grads, |m, g, _| {
                if step == 0 && grads_by.len() < 6 {
                    grads_by.push((name, g.to_vec()));
                }
                opt.step(&mut m.params, g)
            })
            .unwrap();
            let l = *losses.last().unwrap();
            first.get_or_insert(l);
            last = l;
        }
        let first = first.unwrap();
        assert!(last < 0.3 * first, "{name}: loss {first} -> {last}");
    }
    // Through the interface, exact RTRL's gradient is BPTT's.
    let g = |n: &str| grads_by.iter().find(|(m, _)| *m == n).unwrap().1.clone();
    let (gb, gr) = (g("bptt"), g("rtrl"));
    let scale = gb.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    for (a, b) in gr.iter().zip(&gb) {
        assert!((a - b).abs() <= 1e-9 * scale, "{a} vs {b}");
    }
    assert!(EstimatorConfig::new("rtrl2", 1, 1, 1).is_err());
    assert!(EstimatorConfig::new("tbptt", 5, 2, 1).is_err());
}
