//! Initialisation: PyTorch's default U(-1/sqrt(H), 1/sqrt(H)), the options,
//! parameter names, and determinism under a seed.

mod common;
use common::*;
use recurrent::{CellKind, HeadKind, InitConfig, LossKind, Model};

#[test]
fn parameter_names_and_shapes_are_pytorchs() {
    let mut cfg = model_cfg(CellKind::Lstm, 3, 5, 2, true, HeadKind::Last, 2, LossKind::Mse);
    cfg.vocab = Some(11);
    let m = Model::<f32>::new(cfg, &InitConfig::default(), &mut rng(0)).unwrap();
    let names: Vec<(String, Vec<usize>)> = m.table.specs().iter().map(|s| (s.name.clone(), s.shape.clone())).collect();
    let want = [
        ("emb.weight", vec![11, 3]),
        ("rnn.weight_ih_l0", vec![20, 3]),
        ("rnn.weight_hh_l0", vec![20, 5]),
        ("rnn.bias_ih_l0", vec![20]),
        ("rnn.bias_hh_l0", vec![20]),
        ("rnn.weight_ih_l0_reverse", vec![20, 3]),
        ("rnn.weight_hh_l0_reverse", vec![20, 5]),
        ("rnn.bias_ih_l0_reverse", vec![20]),
        ("rnn.bias_hh_l0_reverse", vec![20]),
        ("rnn.weight_ih_l1", vec![20, 10]),
        ("rnn.weight_hh_l1", vec![20, 5]),
        ("rnn.bias_ih_l1", vec![20]),
        ("rnn.bias_hh_l1", vec![20]),
        ("rnn.weight_ih_l1_reverse", vec![20, 10]),
        ("rnn.weight_hh_l1_reverse", vec![20, 5]),
        ("rnn.bias_ih_l1_reverse", vec![20]),
        ("rnn.bias_hh_l1_reverse", vec![20]),
        ("fc.weight", vec![2, 10]),
        ("fc.bias", vec![2]),
    ];
    assert_eq!(names, want.iter().map(|(n, s)| (n.to_string(), s.clone())).collect::<Vec<_>>());
}

#[test]
fn default_init_is_uniform_in_one_over_sqrt_hidden() {
    for cell in CLASSIC_CELLS {
        let h = 64;
        let cfg = model_cfg(cell, 16, h, 1, false, HeadKind::Last, 3, LossKind::Mse);
        let m = Model::<f64>::new(cfg, &InitConfig::default(), &mut rng(5)).unwrap();
        let k = 1.0 / (h as f64).sqrt();
        let w = m.table.view(&m.params, m.table.index_of("rnn.weight_hh_l0").unwrap());
        assert!(w.iter().all(|v| v.abs() <= k));
        let n = w.len() as f64;
        let mean = w.iter().sum::<f64>() / n;
        let var = w.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        // U(-k, k): mean 0, variance k^2/3; 5 standard errors of slack.
        assert!(mean.abs() < 5.0 * k / (3.0 * n).sqrt(), "{cell:?} mean {mean}");
        assert!((var / (k * k / 3.0) - 1.0).abs() < 0.05, "{cell:?} var {var}");
        let fc = m.table.view(&m.params, m.table.index_of("fc.weight").unwrap());
        assert!(fc.iter().all(|v| v.abs() <= k));
    }
}

/// minGRU and minLSTM: one Linear per (layer, direction) under
/// lucidrains/minGRU-pytorch's module names, rows h~ then the gates, no
/// recurrent weights; initialised as nn.Linear, U(-1/sqrt(I_l), 1/sqrt(I_l)).
#[test]
fn min_cells_have_one_input_projection_named_as_lucidrains() {
    for (cell, proj, g) in
        [(CellKind::MinGru, "to_hidden_and_gate", 2), (CellKind::MinLstm, "to_hidden_and_f_i_gate", 3)]
    {
        let (i, h) = (16, 5);
        let cfg = model_cfg(cell, i, h, 2, true, HeadKind::Last, 2, LossKind::Mse);
        let m = Model::<f64>::new(cfg, &InitConfig::default(), &mut rng(5)).unwrap();
        let names: Vec<(String, Vec<usize>)> =
            m.table.specs().iter().map(|s| (s.name.clone(), s.shape.clone())).collect();
        let mut want = Vec::new();
        for l in 0..2 {
            for sfx in ["", "_reverse"] {
                let il = if l == 0 { i } else { 2 * h };
                want.push((format!("rnn.l{l}{sfx}.{proj}.weight"), vec![g * h, il]));
                want.push((format!("rnn.l{l}{sfx}.{proj}.bias"), vec![g * h]));
            }
        }
        want.push(("fc.weight".into(), vec![2, 2 * h]));
        want.push(("fc.bias".into(), vec![2]));
        assert_eq!(names, want, "{cell:?}");
        let w = m.table.view(&m.params, m.table.index_of(&format!("rnn.l0.{proj}.weight")).unwrap());
        let k = 1.0 / (i as f64).sqrt();
        assert!(w.iter().all(|v| v.abs() <= k) && w.iter().any(|v| v.abs() > 0.9 * k), "{cell:?}");
        let w1 = m.table.view(&m.params, m.table.index_of(&format!("rnn.l1.{proj}.weight")).unwrap());
        let k1 = 1.0 / ((2 * h) as f64).sqrt();
        assert!(w1.iter().all(|v| v.abs() <= k1) && w1.iter().any(|v| v.abs() > 0.9 * k1), "{cell:?}");
        // Options about recurrent weights are errors, not silently ignored.
        let init = InitConfig { orthogonal_recurrent: true, ..InitConfig::default() };
        let cfg = model_cfg(cell, i, h, 1, false, HeadKind::Last, 2, LossKind::Mse);
        assert!(Model::<f64>::new(cfg.clone(), &init, &mut rng(9)).is_err(), "{cell:?}");
        let init = InitConfig { forget_bias: Some(1.0), ..InitConfig::default() };
        assert!(Model::<f64>::new(cfg, &init, &mut rng(9)).is_err(), "{cell:?}");
    }
}

#[test]
fn init_options_orthogonal_xavier_forget_bias() {
    let h = 8;
    let cfg = model_cfg(CellKind::Lstm, 5, h, 1, false, HeadKind::Last, 1, LossKind::Mse);
    let init = InitConfig { orthogonal_recurrent: true, xavier_input: true, forget_bias: Some(1.0) };
    let m = Model::<f64>::new(cfg.clone(), &init, &mut rng(9)).unwrap();
    let w = m.table.view(&m.params, m.table.index_of("rnn.weight_hh_l0").unwrap());
    for g in 0..4 {
        let q = &w[g * h * h..(g + 1) * h * h];
        for i in 0..h {
            for j in 0..h {
                let d: f64 = (0..h).map(|k| q[i * h + k] * q[j * h + k]).sum();
                assert!((d - if i == j { 1.0 } else { 0.0 }).abs() < 1e-12);
            }
        }
    }
    let wi = m.table.view(&m.params, m.table.index_of("rnn.weight_ih_l0").unwrap());
    let a = (6.0 / (4 * h + 5) as f64).sqrt();
    assert!(wi.iter().all(|v| v.abs() <= a) && wi.iter().any(|v| v.abs() > 1.0 / (h as f64).sqrt()));
    let bi = m.table.view(&m.params, m.table.index_of("rnn.bias_ih_l0").unwrap());
    let bh = m.table.view(&m.params, m.table.index_of("rnn.bias_hh_l0").unwrap());
    assert!(bi[h..2 * h].iter().all(|&v| v == 1.0) && bh[h..2 * h].iter().all(|&v| v == 0.0));
    // Forget bias on a GRU is an error, not silently ignored.
    let gcfg = model_cfg(CellKind::Gru, 5, h, 1, false, HeadKind::Last, 1, LossKind::Mse);
    assert!(Model::<f64>::new(gcfg, &init, &mut rng(9)).is_err());
}

#[test]
fn same_seed_same_parameters() {
    let cfg = model_cfg(CellKind::Gru, 4, 6, 2, true, HeadKind::Every, 3, LossKind::CrossEntropy);
    let a = Model::<f32>::new(cfg.clone(), &InitConfig::default(), &mut rng(1)).unwrap();
    let b = Model::<f32>::new(cfg.clone(), &InitConfig::default(), &mut rng(1)).unwrap();
    let c = Model::<f32>::new(cfg, &InitConfig::default(), &mut rng(2)).unwrap();
    assert_eq!(a.params, b.params);
    assert_ne!(a.params, c.params);
}
