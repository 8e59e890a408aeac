//! The benchmark configurations shared with the PyTorch peer
//! (../shared/bench/configs.json, copied here so nothing outside the
//! repository is read at run time) and the runner behind `recurrent bench`.
//! Each measurement prints one JSON line with the peer's fields.

use rand::{Rng, SeedableRng};
use recurrent::cells::CellKind;
use recurrent::error::{config_err, Result};
use recurrent::loss::{LossKind, Targets};
use recurrent::model::{Batch, HeadKind, InitConfig, Model, ModelConfig, SeqInput};
use recurrent::network::RnnConfig;
use recurrent::optim::{Optimizer, OptimizerKind};
use serde::Serialize;
use std::time::Instant;

/// One benchmark configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BenchConfig {
    pub name: &'static str,
    pub input: usize,
    pub hidden: usize,
    pub layers: usize,
    pub seq_len: usize,
    pub batch: usize,
    /// Character LM: embedding, per-step head over the vocabulary, cross-entropy.
    pub lm: bool,
}

/// Outputs of the regression head.
pub const HEAD_OUTPUTS: usize = 10;
/// Vocabulary of the LM configuration.
pub const VOCAB: usize = 65;
/// Streaming: (batch, input, hidden), one cell step at a time.
pub const STREAM: (usize, usize, usize) = (1, 64, 256);

/// The configurations of configs.json.
pub const CONFIGS: [BenchConfig; 4] = [
    BenchConfig { name: "S", input: 32, hidden: 128, layers: 1, seq_len: 50, batch: 32, lm: false },
    BenchConfig { name: "M", input: 64, hidden: 256, layers: 2, seq_len: 100, batch: 64, lm: false },
    BenchConfig { name: "L", input: 256, hidden: 1024, layers: 1, seq_len: 50, batch: 64, lm: false },
    BenchConfig { name: "LM", input: 64, hidden: 512, layers: 1, seq_len: 100, batch: 32, lm: true },
];

/// Looks a configuration up by name.
pub fn config(name: &str) -> Result<BenchConfig> {
    CONFIGS
        .iter()
        .copied()
        .find(|c| c.name == name)
        .ok_or_else(|| config_err("config", name, "expected one of S, M, L, LM"))
}

/// The cell names of the peer script.
pub fn cell(name: &str) -> Result<CellKind> {
    match name {
        "rnn" => Ok(CellKind::RnnTanh),
        "lstm" => Ok(CellKind::Lstm),
        "gru" => Ok(CellKind::Gru),
        "mingru" => Ok(CellKind::MinGru),
        "minlstm" => Ok(CellKind::MinLstm),
        other => Err(config_err("cell", other, "expected one of rnn, lstm, gru, mingru, minlstm")),
    }
}

fn peer_name(cell: CellKind) -> &'static str {
    match cell {
        CellKind::RnnTanh | CellKind::RnnRelu => "rnn",
        CellKind::Lstm => "lstm",
        CellKind::Gru => "gru",
        CellKind::MinGru => "mingru",
        CellKind::MinLstm => "minlstm",
    }
}

/// Forward FLOPs as the peer counts them: 2*B*T*(I_l+H)*G*H per layer plus the head.
pub fn forward_flops(cell: CellKind, c: &BenchConfig) -> f64 {
    let (b, t, h) = (c.batch as f64, c.seq_len as f64, c.hidden as f64);
    let mut f = 0.0;
    for l in 0..c.layers {
        let i = if l == 0 { c.input } else { c.hidden } as f64;
        // Cells without recurrent weights (minGRU, minLSTM) make the input product only.
        let hr = if cell.recurrent() { h } else { 0.0 };
        f += 2.0 * b * t * (i + hr) * cell.gates() as f64 * h;
    }
    let out = if c.lm { VOCAB } else { HEAD_OUTPUTS } as f64;
    f + 2.0 * b * if c.lm { t } else { 1.0 } * h * out
}

/// One JSON line of results.
#[derive(Clone, Debug, Serialize)]
pub struct BenchLine {
    pub lib: String,
    pub cell: String,
    pub config: String,
    pub mode: String,
    pub threads: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reps: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub median_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gflops: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub median_us: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_us: Option<f64>,
}

fn lib_name() -> String {
    format!("recurrent-{}", env!("CARGO_PKG_VERSION"))
}

/// The peer's timing loop: 3 warm-up calls, then at least 10 reps and
/// `seconds` of work (at most 10x that once 5 reps are in). (median, min, reps).
fn median_time(mut step: impl FnMut() -> Result<()>, seconds: f64) -> Result<(f64, f64, usize)> {
    for _ in 0..3 {
        step()?;
    }
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < 10 || start.elapsed().as_secs_f64() < seconds {
        let t = Instant::now();
        step()?;
        times.push(t.elapsed().as_secs_f64());
        if start.elapsed().as_secs_f64() > 10.0 * seconds && times.len() >= 5 {
            break;
        }
    }
    times.sort_by(|a, b| a.total_cmp(b));
    Ok((times[times.len() / 2], times[0], times.len()))
}

/// Times training (forward + backward + Adam step) or inference of one configuration.
pub fn bench_model(cellk: CellKind, c: &BenchConfig, train: bool, threads: usize, seconds: f64) -> Result<BenchLine> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let cfg = ModelConfig {
        rnn: RnnConfig {
            cell: cellk,
            input_size: c.input,
            hidden_size: c.hidden,
            num_layers: c.layers,
            bidirectional: false,
            bias: true,
            dropout: 0.0,
        },
        vocab: c.lm.then_some(VOCAB),
        head: if c.lm { HeadKind::Every } else { HeadKind::Last },
        out_size: if c.lm { VOCAB } else { HEAD_OUTPUTS },
        loss: if c.lm { LossKind::CrossEntropy } else { LossKind::Mse },
    };
    let mut model = Model::<f32>::new(cfg, &InitConfig::default(), &mut rng)?;
    let (b, t) = (c.batch, c.seq_len);
    let xs: Vec<f32> = (0..b * t * c.input).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let toks: Vec<usize> = (0..b * t).map(|_| rng.gen_range(0..VOCAB)).collect();
    let ycls: Vec<i64> = (0..b * t).map(|_| rng.gen_range(0..VOCAB as i64)).collect();
    let yreal: Vec<f32> = (0..b * HEAD_OUTPUTS).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let mut opt = Optimizer::<f32>::new(OptimizerKind::default_for("adam", 1e-3)?, model.num_params())?;
    let mut grads = vec![0.0f32; model.num_params()];
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| config_err("threads", threads, e.to_string()))?;
    let (med, min, reps) = pool.install(|| {
        median_time(
            || {
                let input = if c.lm { SeqInput::Tokens(&toks) } else { SeqInput::Dense(&xs) };
                let batch = Batch { input, batch: b, seq_len: t, batch_first: true, lengths: None };
                let targets = if c.lm { Targets::Class(&ycls) } else { Targets::Real(&yreal) };
                if train {
                    grads.iter_mut().for_each(|g| *g = 0.0);
                    model.loss_and_grad::<rand_chacha::ChaCha8Rng>(&batch, targets, None, &mut grads, None)?;
                    opt.step(&mut model.params, &grads)?;
                } else {
                    model.predict(&batch, None)?;
                }
                Ok(())
            },
            seconds,
        )
    })?;
    let flops = forward_flops(cellk, c) * if train { 3.0 } else { 1.0 };
    Ok(BenchLine {
        lib: lib_name(),
        cell: peer_name(cellk).into(),
        config: c.name.into(),
        mode: if train { "train" } else { "infer" }.into(),
        threads,
        reps: Some(reps),
        median_ms: Some(med * 1e3),
        min_ms: Some(min * 1e3),
        tokens_per_s: Some((b * t) as f64 / med),
        gflops: Some(flops / med / 1e9),
        median_us: None,
        min_us: None,
    })
}

/// Times one cell step at batch 1 (inference), as the peer's stream mode.
pub fn bench_stream(cellk: CellKind, threads: usize) -> Result<BenchLine> {
    let (b, i, h) = STREAM;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let cfg = ModelConfig {
        rnn: RnnConfig::new(cellk, i, h),
        vocab: None,
        head: HeadKind::Every,
        out_size: 1,
        loss: LossKind::Mse,
    };
    let model = Model::<f32>::new(cfg, &InitConfig::default(), &mut rng)?;
    let x: Vec<f32> = (0..b * i).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let mut state = model.zero_state(b);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| config_err("threads", threads, e.to_string()))?;
    // Weights packed once; each step updates the state in place, as the peer's cell call does.
    let mut runner = model.runner()?;
    let mut run = |n: usize| -> Result<()> {
        for _ in 0..n {
            runner.step(&x, &mut state)?;
        }
        Ok(())
    };
    let per_step = pool.install(|| -> Result<Vec<f64>> {
        run(1000)?;
        let mut v = Vec::new();
        for _ in 0..7 {
            let t = Instant::now();
            run(5000)?;
            v.push(t.elapsed().as_secs_f64() / 5000.0);
        }
        Ok(v)
    })?;
    let mut per_step = per_step;
    per_step.sort_by(|a, b| a.total_cmp(b));
    Ok(BenchLine {
        lib: lib_name(),
        cell: peer_name(cellk).into(),
        config: "stream".into(),
        mode: "stream".into(),
        threads,
        reps: None,
        median_ms: None,
        min_ms: None,
        tokens_per_s: None,
        gflops: None,
        median_us: Some(per_step[3] * 1e6),
        min_us: Some(per_step[0] * 1e6),
    })
}

/// One line of the online-estimator benchmark.
#[derive(Clone, Debug, Serialize)]
pub struct OnlineBenchLine {
    pub lib: String,
    pub mode: String,
    pub estimator: String,
    pub cell: String,
    pub hidden: usize,
    pub input: usize,
    /// Median time of one training step (one time step, batch 1), milliseconds.
    pub ms_per_step: f64,
    /// FLOPs of the step's dominant product (see `online_flops`).
    pub dominant_flops: f64,
    /// dominant_flops / time.
    pub gflops: f64,
}

/// Input width of the online benchmark.
pub const ONLINE_INPUT: usize = 32;

/// FLOPs of the dominant product of one step: exact RTRL and SnAp-2 (dense
/// J): D J, 2 S^2 P; SnAp-1: its per-unit S x S blocks on the pattern, 2 SC P;
/// UORO: D s~ and the immediate product, 2 S^2 + 4 P; BPTT: forward and
/// backward of the step's products, 3 x 2 (I + H) G H.
pub fn online_flops(cell: CellKind, estimator: recurrent::grad::online::Estimator, h: usize, i: usize) -> f64 {
    use recurrent::grad::online::Estimator as E;
    let g = cell.gates() as f64;
    let sc = recurrent::cells::state_components(cell) as f64;
    let (h, i) = (h as f64, i as f64);
    let s = sc * h;
    // Cells without recurrent weights: no W_hh, one bias, and a per-unit exact RTRL.
    let (hr, nb) = if cell.recurrent() { (h, 2.0) } else { (0.0, 1.0) };
    let p = g * h * (i + hr + nb);
    match estimator {
        E::Rtrl if !cell.recurrent() => 2.0 * sc * p,
        E::Rtrl | E::Snap2 => 2.0 * s * s * p,
        E::Snap1 => 2.0 * sc * p,
        E::Uoro => 2.0 * s * s + 4.0 * p,
        E::Bptt | E::Tbptt => 3.0 * 2.0 * (i + hr) * g * h,
    }
}

/// Times one training step of `estimator` on a one-layer network of `hidden`
/// units with 32 inputs, batch 1, f32. Online estimators: one time step of a
/// stream (forward, influence update, gradient). BPTT: forward and backward
/// over 100 steps, divided by 100.
pub fn bench_online(
    cellk: CellKind,
    estimator: recurrent::grad::online::Estimator,
    hidden: usize,
    seconds: f64,
) -> Result<OnlineBenchLine> {
    use recurrent::grad::online::{Estimator as E, OnlineLearner};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let i = ONLINE_INPUT;
    let cfg = ModelConfig {
        rnn: RnnConfig::new(cellk, i, hidden),
        vocab: None,
        head: HeadKind::Every,
        out_size: 1,
        loss: LossKind::Mse,
    };
    let model = Model::<f32>::new(cfg, &InitConfig::default(), &mut rng)?;
    let x: Vec<f32> = (0..100 * i).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let y: Vec<f32> = (0..100).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let opt = Optimizer::<f32>::new(OptimizerKind::default_for("sgd", 1e-4)?, model.num_params())?;
    let (med, _, _) = if matches!(estimator, E::Bptt | E::Tbptt) {
        let mut grads = vec![0.0f32; model.num_params()];
        let (m, mn, r) = median_time(
            || {
                let batch =
                    Batch { input: SeqInput::Dense(&x), batch: 1, seq_len: 100, batch_first: true, lengths: None };
                grads.iter_mut().for_each(|g| *g = 0.0);
                model.loss_and_grad::<rand_chacha::ChaCha8Rng>(&batch, Targets::Real(&y), None, &mut grads, None)?;
                Ok(())
            },
            seconds,
        )?;
        (m / 100.0, mn / 100.0, r)
    } else {
        // k = usize::MAX: never update, so the step is the gradient computation alone, as for BPTT.
        let mut l =
            OnlineLearner::new(model, opt, estimator, usize::MAX, 1, 0, recurrent::grad::online::DEFAULT_MEMORY_LIMIT)?;
        let mut t = 0usize;
        median_time(
            || {
                l.step(&x[(t % 100) * i..(t % 100 + 1) * i], Some(Targets::Real(&y[t % 100..t % 100 + 1])))?;
                t += 1;
                Ok(())
            },
            seconds,
        )?
    };
    let flops = online_flops(cellk, estimator, hidden, i);
    Ok(OnlineBenchLine {
        lib: lib_name(),
        mode: "online".into(),
        estimator: format!("{estimator:?}").to_lowercase(),
        cell: peer_name(cellk).into(),
        hidden,
        input: i,
        ms_per_step: med * 1e3,
        dominant_flops: flops,
        gflops: flops / med / 1e9,
    })
}
