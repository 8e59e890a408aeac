//! The built-in demo: an LSTM learns the adding problem (sum the two marked
//! numbers of a sequence) and its loss is printed as it falls.

use anyhow::Result;
use rand::{Rng, SeedableRng};
use recurrent::optim::{clip_grad_norm, Optimizer, OptimizerKind};
use recurrent::{Batch, CellKind, HeadKind, InitConfig, LossKind, Model, ModelConfig, RnnConfig, SeqInput, Targets};

#[derive(clap::Args, Debug, Clone)]
pub struct DemoArgs {
    /// Random seed (data, initialisation).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Training steps.
    #[arg(long, default_value_t = 300)]
    pub steps: usize,
    /// Sequence length of the adding problem.
    #[arg(long, default_value_t = 20)]
    pub seq_len: usize,
}

impl Default for DemoArgs {
    fn default() -> Self {
        DemoArgs { seed: 0, steps: 300, seq_len: 20 }
    }
}

/// A batch of the adding problem: inputs [B, T, 2] (value, marker), targets [B, 1].
fn adding_batch<R: Rng>(rng: &mut R, b: usize, t: usize) -> (Vec<f32>, Vec<f32>) {
    let mut x = vec![0.0f32; b * t * 2];
    let mut y = vec![0.0f32; b];
    for r in 0..b {
        let i = rng.gen_range(0..t / 2);
        let j = rng.gen_range(t / 2..t);
        for s in 0..t {
            x[(r * t + s) * 2] = rng.gen_range(0.0..1.0);
        }
        for &k in &[i, j] {
            x[(r * t + k) * 2 + 1] = 1.0;
            y[r] += x[(r * t + k) * 2];
        }
    }
    (x, y)
}

pub fn run(a: &DemoArgs) -> Result<()> {
    if a.seq_len < 2 || a.steps == 0 {
        anyhow::bail!(recurrent::Error::Config { what: "seq_len / steps".into(), value: format!("{} / {}", a.seq_len, a.steps), reason: "need seq_len >= 2 and steps >= 1".into() });
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(a.seed);
    let cfg = ModelConfig {
        rnn: RnnConfig::new(CellKind::Lstm, 2, 32),
        vocab: None,
        head: HeadKind::Last,
        out_size: 1,
        loss: LossKind::Mse,
    };
    let mut model = Model::<f32>::new(cfg, &InitConfig::default(), &mut rng)?;
    let mut opt = Optimizer::new(OptimizerKind::default_for("adam", 1e-2)?, model.num_params())?;
    let mut grads = vec![0.0f32; model.num_params()];
    let (b, t) = (32, a.seq_len);
    println!("demo: LSTM (hidden 32) on the adding problem, T = {t}, batch {b}, Adam lr 1e-2, {} steps", a.steps);
    println!("      a model that always answers 1.0 has an MSE of about 0.167");
    let mut avg = 0.0;
    for step in 1..=a.steps {
        let (x, y) = adding_batch(&mut rng, b, t);
        let batch = Batch { input: SeqInput::Dense(&x), batch: b, seq_len: t, batch_first: true, lengths: None };
        grads.iter_mut().for_each(|g| *g = 0.0);
        let (loss, _) = model.loss_and_grad::<rand_chacha::ChaCha8Rng>(&batch, Targets::Real(&y), None, &mut grads, None)?;
        clip_grad_norm(&mut grads, 1.0);
        opt.step(&mut model.params, &grads)?;
        avg += loss as f64;
        if step % 25 == 0 {
            println!("step {step:>5}  train MSE {:.5}", avg / 25.0);
            avg = 0.0;
        }
    }
    Ok(())
}
