//! Matches PyTorch: fixtures written by tools/make_fixtures.py (committed, so
//! no Python is needed here) hold weights, inputs, lengths, outputs, final
//! states, loss and every gradient, computed by PyTorch in float64 and in
//! float32. We match f64 to 1e-10 and f32 to 1e-5, relative. The relative
//! error of an element is |a - b| / max(|a|, |b|, floor), with floor a
//! fraction of the largest magnitude in that tensor: 1e-3 in f64 (element by
//! element, except elements that are zero up to rounding), 1 in f32 (error
//! relative to the tensor's scale: two independent f32 computations differ
//! by rounding of order 1e-7 of that scale in every element, so an element
//! 1000x smaller than its tensor cannot agree to 1e-5 of itself).

mod common;
use common::Rng64;
use recurrent::{
    Batch, CellKind, Float, HeadKind, LossKind, Model, ModelConfig, RnnConfig, RnnState, SeqInput, Targets,
};
use serde_json::Value;

fn load(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))).unwrap()
}

fn tensor(v: &Value) -> (Vec<usize>, Vec<f64>) {
    let shape = v["shape"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect();
    let data = v["data"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
    (shape, data)
}

/// Worst relative error of `got` against `want` (see the module comment).
fn compare<F: Float>(got: &[F], want: &[f64], floor: f64) -> f64 {
    assert_eq!(got.len(), want.len(), "length");
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    got.iter()
        .zip(want)
        .map(|(a, b)| {
            let a = a.to_f64().unwrap();
            (a - b).abs() / a.abs().max(b.abs()).max(floor * scale).max(1e-300)
        })
        .fold(0.0, f64::max)
}

fn config(c: &Value) -> ModelConfig {
    let cfg = &c["config"];
    let us = |k: &str| cfg[k].as_u64().unwrap() as usize;
    ModelConfig {
        rnn: RnnConfig {
            cell: CellKind::parse(cfg["cell"].as_str().unwrap()).unwrap(),
            input_size: us("input_size"),
            hidden_size: us("hidden_size"),
            num_layers: us("num_layers"),
            bidirectional: cfg["bidirectional"].as_bool().unwrap(),
            bias: cfg["bias"].as_bool().unwrap(),
            dropout: 0.0,
        },
        vocab: cfg["vocab"].as_u64().map(|v| v as usize),
        head: if cfg["head"] == "last" { HeadKind::Last } else { HeadKind::Every },
        out_size: us("out_size"),
        loss: LossKind::parse(cfg["loss"].as_str().unwrap()).unwrap(),
    }
}

fn run_case<F: Float>(c: &Value, precision: &str, tol: f64, floor: f64) -> Vec<String> {
    let name = c["name"].as_str().unwrap();
    let cfg = config(c);
    let cf = &c["config"];
    let (b, t) = (cf["batch"].as_u64().unwrap() as usize, cf["seq_len"].as_u64().unwrap() as usize);
    let batch_first = cf["batch_first"].as_bool().unwrap();
    let lengths: Option<Vec<usize>> =
        cf["lengths"].as_array().map(|a| a.iter().map(|v| v.as_u64().unwrap() as usize).collect());
    let inputs = c["inputs"].as_object().unwrap();
    let mut model = Model::<F>::zeros(cfg.clone()).unwrap();
    let named: Vec<(String, Vec<usize>, Vec<F>)> = model
        .table
        .specs()
        .iter()
        .map(|s| {
            let (shape, data) = tensor(&inputs[&s.name]);
            (s.name.clone(), shape, data.iter().map(|&v| F::of(v)).collect())
        })
        .collect();
    model.load_named(&named).unwrap();
    let (_, x) = tensor(&inputs["x"]);
    let xf: Vec<F> = x.iter().map(|&v| F::of(v)).collect();
    let toks: Vec<usize> = x.iter().map(|&v| v as usize).collect();
    let input = if cfg.vocab.is_some() { SeqInput::Tokens(&toks) } else { SeqInput::Dense(&xf) };
    let batch = Batch { input, batch: b, seq_len: t, batch_first, lengths: lengths.as_deref() };
    let conv =
        |k: &str| inputs.get(k).map(|v| tensor(v).1.iter().map(|&x| F::of(x)).collect::<Vec<F>>()).unwrap_or_default();
    let state = RnnState { h: conv("h0"), c: conv("c0") };
    let (_, target) = tensor(&inputs["target"]);
    let real: Vec<F> = target.iter().map(|&v| F::of(v)).collect();
    let class: Vec<i64> = target.iter().map(|&v| v as i64).collect();
    let targets = if cfg.loss == LossKind::CrossEntropy { Targets::Class(&class) } else { Targets::Real(&real) };

    let (out, cache) = model.forward::<Rng64>(&batch, Some(&state), None).unwrap();
    let (loss, dy) = model.loss(&out.y, targets, &cache).unwrap();
    let mut grads = vec![F::zero(); model.num_params()];
    let ig = model.backward(&cache, &dy, None, &mut grads, true).unwrap();

    let want = c[precision].as_object().unwrap();
    let mut checks: Vec<(String, Vec<F>)> =
        vec![("out".into(), out.y.clone()), ("loss".into(), vec![loss]), ("h_n".into(), out.state.h.clone())];
    checks[0] = ("out".into(), out.out.clone());
    checks.push(("y".into(), out.y.clone()));
    if cfg.rnn.cell == CellKind::Lstm {
        checks.push(("c_n".into(), out.state.c.clone()));
        checks.push(("grad.c0".into(), ig.dc0.clone()));
    }
    checks.push(("grad.h0".into(), ig.dh0.clone()));
    if cfg.vocab.is_none() {
        checks.push(("grad.x".into(), ig.dx.clone()));
    }
    for s in model.table.specs() {
        checks.push((
            format!("grad.{}", s.name),
            model.table.view(&grads, model.table.index_of(&s.name).unwrap()).to_vec(),
        ));
    }
    let mut fails = Vec::new();
    for (k, got) in &checks {
        let w = want.get(k).unwrap_or_else(|| panic!("{name}: fixture lacks {k}"));
        let e = compare(got, &tensor(w).1, floor);
        if !(e <= tol) {
            fails.push(format!("{name} [{precision}] {k}: rel err {e:.3e} > {tol:e}"));
        }
    }
    // Every gradient the fixture holds was checked.
    let n_grads = want.keys().filter(|k| k.starts_with("grad.")).count();
    assert_eq!(n_grads, checks.iter().filter(|(k, _)| k.starts_with("grad.")).count(), "{name}: gradient count");
    fails
}

#[test]
fn networks_match_pytorch_in_f64_and_f32() {
    let fx = load("torch_rnn.json");
    let cases = fx["cases"].as_array().unwrap();
    assert!(cases.len() >= 25);
    let mut fails = Vec::new();
    for c in cases {
        fails.extend(run_case::<f64>(c, "f64", 1e-10, 1e-3));
        fails.extend(run_case::<f32>(c, "f32", 1e-5, 1.0));
    }
    assert!(fails.is_empty(), "{}", fails.join("\n"));
}
