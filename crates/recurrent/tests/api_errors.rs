//! Bad arguments to the public API return a typed error naming the values
//! involved: never a panic, never a silently wrong result.

mod common;
use common::*;
use recurrent::grad::tbptt::{Stream, Truncation};
use recurrent::{Batch, CellKind, Error, HeadKind, LossKind, Model, ModelConfig, RnnState, SeqInput, Targets};

fn model(cell: CellKind) -> Model<f64> {
    random_model(model_cfg(cell, 3, 4, 2, true, HeadKind::Last, 2, LossKind::Mse), 1, 0.5)
}

fn batch<'a>(x: &'a [f64], b: usize, t: usize, lengths: Option<&'a [usize]>) -> Batch<'a, f64> {
    Batch { input: SeqInput::Dense(x), batch: b, seq_len: t, batch_first: true, lengths }
}

#[test]
fn shape_mismatch_names_both_shapes() {
    let m = model(CellKind::Lstm);
    let x = vec![0.0; 2 * 5 * 3 - 1];
    let e = m.forward::<Rng64>(&batch(&x, 2, 5, None), None, None).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::Shape { .. }), "{msg}");
    assert!(msg.contains("[B=2, T=5, I=3]") && msg.contains("29"), "{msg}");
}

#[test]
fn zero_sizes_are_rejected() {
    for (i, h, l, o) in [(0, 4, 1, 1), (3, 0, 1, 1), (3, 4, 0, 1), (3, 4, 1, 0)] {
        let cfg = model_cfg(CellKind::Gru, i, h, l, false, HeadKind::Last, o, LossKind::Mse);
        let e = Model::<f64>::zeros(cfg).unwrap_err();
        assert!(matches!(e, Error::Config { .. }), "{e}");
        assert!(e.to_string().contains("= 0"), "{e}");
    }
    let m = model(CellKind::Gru);
    let e = m.forward::<Rng64>(&batch(&[], 0, 5, None), None, None).unwrap_err();
    assert!(e.to_string().contains("batch"), "{e}");
    let e = m.forward::<Rng64>(&batch(&[], 2, 0, None), None, None).unwrap_err();
    assert!(e.to_string().contains("seq_len"), "{e}");
}

#[test]
fn dropout_outside_unit_interval_is_rejected() {
    for p in [-0.1, 1.0, 1.5, f64::NAN] {
        let mut cfg: ModelConfig = model_cfg(CellKind::RnnTanh, 3, 4, 2, false, HeadKind::Last, 1, LossKind::Mse);
        cfg.rnn.dropout = p;
        let e = Model::<f64>::zeros(cfg).unwrap_err();
        assert!(e.to_string().contains("dropout") && e.to_string().contains("[0, 1)"), "{e}");
    }
}

#[test]
fn bad_lengths_are_rejected() {
    let m = model(CellKind::RnnTanh);
    let x = vec![0.1; 2 * 5 * 3];
    for (lengths, want) in [
        (vec![5, 0], Error::Length { index: 1, length: 0, seq_len: 5 }),
        (vec![6, 2], Error::Length { index: 0, length: 6, seq_len: 5 }),
    ] {
        let e = m.forward::<Rng64>(&batch(&x, 2, 5, Some(&lengths)), None, None).unwrap_err();
        assert_eq!(e, want);
        assert!(e.to_string().contains(&format!("invalid length {}", want_len(&want))), "{e}");
    }
    let e = m.forward::<Rng64>(&batch(&x, 2, 5, Some(&[5])), None, None).unwrap_err();
    assert!(matches!(e, Error::Shape { .. }), "{e}");
}

fn want_len(e: &Error) -> usize {
    match e {
        Error::Length { length, .. } => *length,
        _ => unreachable!(),
    }
}

#[test]
fn truncation_k2_below_k1_is_rejected() {
    let e = Truncation::new(5, 3).unwrap_err();
    assert!(e.to_string().contains("k2 = 3") && e.to_string().contains("k1 = 5"), "{e}");
}

#[test]
fn wrong_state_tokens_and_targets_are_rejected() {
    let m = model(CellKind::Lstm);
    let x = vec![0.1; 2 * 5 * 3];
    let bad = RnnState { h: vec![0.0; 7], c: vec![] };
    let e = m.forward::<Rng64>(&batch(&x, 2, 5, None), Some(&bad), None).unwrap_err();
    assert!(matches!(e, Error::Shape { .. }), "{e}");
    // Token ids to a model without an embedding, and out-of-vocabulary tokens.
    let toks = vec![1usize; 10];
    let tb = Batch { input: SeqInput::Tokens(&toks), batch: 2, seq_len: 5, batch_first: true, lengths: None };
    assert!(m.forward::<Rng64>(&tb, None, None).is_err());
    let mut cfg = model_cfg(CellKind::Gru, 3, 4, 1, false, HeadKind::Every, 5, LossKind::CrossEntropy);
    cfg.vocab = Some(5);
    let me = Model::<f64>::new(cfg, &Default::default(), &mut rng(1)).unwrap();
    let toks = vec![1, 2, 3, 9, 0, 1];
    let tb = Batch { input: SeqInput::Tokens(&toks), batch: 2, seq_len: 3, batch_first: true, lengths: None };
    assert_eq!(me.forward::<Rng64>(&tb, None, None).unwrap_err(), Error::Token { token: 9, position: 3, vocab: 5 });
    // NaN input.
    let mut xn = x.clone();
    xn[4] = f64::NAN;
    let e = m.forward::<Rng64>(&batch(&xn, 2, 5, None), None, None).unwrap_err();
    assert!(e.to_string().contains("position 4"), "{e}");
    // Targets of the wrong size or kind.
    let mut g = vec![0.0; m.num_params()];
    let e = m.loss_and_grad::<Rng64>(&batch(&x, 2, 5, None), Targets::Real(&[0.0; 3]), None, &mut g, None).unwrap_err();
    assert!(e.to_string().contains("targets"), "{e}");
    let e = Stream::new(&m, &batch(&x, 2, 5, None), Targets::Class(&[0, 1, 2])).unwrap_err();
    assert!(e.to_string().contains("targets"), "{e}");
    // A gradient buffer of the wrong size.
    let e = m
        .loss_and_grad::<Rng64>(&batch(&x, 2, 5, None), Targets::Real(&[0.0; 4]), None, &mut [0.0; 3], None)
        .unwrap_err();
    assert!(e.to_string().contains("grads"), "{e}");
}

#[test]
fn loading_parameters_checks_names_and_shapes() {
    let mut m = model(CellKind::Gru);
    let e = m.load_named(&[("rnn.weight_ih_l9".into(), vec![1], vec![0.0])]).unwrap_err();
    assert!(e.to_string().contains("rnn.weight_ih_l9"), "{e}");
    let e = m.load_named(&[("fc.bias".into(), vec![3], vec![0.0; 3])]).unwrap_err();
    assert!(e.to_string().contains("[2]") && e.to_string().contains("[3]"), "{e}");
    let e = m.load_named(&[("fc.bias".into(), vec![2], vec![0.0; 2])]).unwrap_err();
    assert!(e.to_string().contains("missing"), "{e}");
}
