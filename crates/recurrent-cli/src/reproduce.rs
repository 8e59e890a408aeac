//! The reproduction suite behind `recurrent reproduce <name>`: the classic
//! long-range experiments, each a list of training runs with its
//! configuration, seed, wall time and result. `quick` settings are smoke
//! tests small enough for CI (they only show the loss falling); the full
//! settings are what docs/results.md reports.

use crate::train::config::Task;
use crate::train::{self, Silent, TrainConfig};
use recurrent::error::{config_err, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The experiments `reproduce` knows.
pub const EXPERIMENTS: [&str; 5] = ["adding", "copy", "smnist", "charlm", "sunspots"];

/// One run of an experiment and its outcome.
#[derive(Clone, Debug, Serialize)]
pub struct RunResult {
    pub experiment: String,
    /// What varies in this run (cell, length, clipping...).
    pub variant: String,
    pub seed: u64,
    pub config: TrainConfig,
    pub wall_s: f64,
    pub metric: String,
    /// Best validation metric.
    pub val: f64,
    /// Test metric of the best model, when there is a test part.
    pub test: Option<f64>,
    /// Baselines for this task (description, value in the same metric).
    pub baselines: Vec<(String, f64)>,
    /// Validation loss after the first epoch and at the best epoch: the loss must fall.
    pub first_val_loss: f64,
    pub best_val_loss: f64,
    /// The experiment's success criterion, when it has one (e.g. adding: MSE < 0.01).
    pub success: Option<bool>,
}

fn base(task: Task, out: &Path, variant: &str, seed: u64) -> TrainConfig {
    let mut c = TrainConfig::default();
    c.task = task;
    c.seed = seed;
    c.out = Some(out.join(variant.replace([' ', '=', ','], "_")));
    c
}

/// The runs of an experiment. `data` is the shared data folder (../shared/data).
pub fn plan(name: &str, quick: bool, out: &Path, data: &Path) -> Result<Vec<(String, TrainConfig)>> {
    let mut runs = Vec::new();
    match name {
        "adding" => {
            let lengths: &[usize] = if quick { &[10] } else { &[50, 100, 200] };
            for &t in lengths {
                for (cell, clip) in [("rnn", 1.0), ("rnn", 0.0), ("lstm", 1.0), ("gru", 1.0)] {
                    let v = format!("T={t} {cell}{}", if cell == "rnn" && clip == 0.0 { " no-clip" } else { "" });
                    let mut c = base(Task::Adding, out, &v, 1);
                    c.model.cell = cell.parse()?;
                    c.model.hidden = if quick { 16 } else { 64 };
                    c.data.length = t;
                    c.data.samples = if quick { 400 } else { 10000 };
                    c.train.epochs = if quick { 3 } else { 30 };
                    c.train.batch = 32;
                    c.train.lr = 2e-3;
                    c.train.clip_norm = clip;
                    c.train.patience = if quick { 0 } else { 6 };
                    // Success is MSE below 0.01; training on past 0.005 changes nothing that matters here.
                    c.train.stop_at = (!quick).then_some(0.005);
                    runs.push((v, c));
                }
            }
        }
        "copy" => {
            let delays: &[usize] = if quick { &[2] } else { &[10, 20, 50] };
            for &delay in delays {
                for cell in ["rnn", "lstm", "gru"] {
                    let v = format!("delay={delay} {cell}");
                    let mut c = base(Task::Copy, out, &v, 1);
                    c.model.cell = cell.parse()?;
                    c.model.hidden = if quick { 16 } else { 64 };
                    c.data.length = if quick { 3 } else { 5 };
                    c.data.delay = delay;
                    c.data.symbols = 8;
                    c.data.samples = if quick { 400 } else { 8000 };
                    c.train.epochs = if quick { 3 } else { 30 };
                    c.train.lr = 5e-3;
                    c.train.patience = if quick { 0 } else { 6 };
                    c.train.stop_at = (!quick).then_some(0.995);
                    runs.push((v, c));
                }
            }
        }
        "smnist" => {
            let dir = data.join("mnist");
            if !dir.exists() {
                return Err(config_err(
                    "data",
                    dir.display(),
                    "the MNIST folder is missing (expected ../shared/data/mnist)",
                ));
            }
            for cell in ["lstm", "gru"] {
                let v = cell.to_string();
                let mut c = base(Task::Mnist, out, &v, 1);
                c.model.cell = cell.parse()?;
                c.model.hidden = if quick { 16 } else { 128 };
                c.data.path = Some(dir.clone());
                // Full: 20,000 training images (a third of MNIST) keeps a run near ten minutes here.
                c.data.limit = if quick { 600 } else { 20000 };
                c.data.val_fraction = if quick { 0.2 } else { 0.1 };
                c.train.epochs = if quick { 2 } else { 5 };
                c.train.batch = if quick { 32 } else { 128 };
                c.train.lr = 2e-3;
                runs.push((v, c));
            }
        }
        "charlm" => {
            let f = data.join("tinyshakespeare/input.txt");
            if !f.exists() {
                return Err(config_err(
                    "data",
                    f.display(),
                    "tiny-shakespeare is missing (expected ../shared/data/tinyshakespeare/input.txt)",
                ));
            }
            for cell in ["lstm", "gru"] {
                let v = cell.to_string();
                let mut c = base(Task::Charlm, out, &v, 1);
                c.model.cell = cell.parse()?;
                c.model.hidden = if quick { 32 } else { 256 };
                c.model.emb_dim = if quick { 16 } else { 64 };
                c.data.path = Some(f.clone());
                c.data.val_fraction = 0.1;
                c.data.test_fraction = 0.0;
                c.train.epochs = if quick { 1 } else { 3 };
                c.train.max_steps = if quick { 40 } else { 0 };
                c.train.val_every = if quick { 10 } else { 0 };
                c.train.batch = 32;
                c.train.k1 = if quick { 25 } else { 100 };
                c.train.k2 = c.train.k1;
                c.train.lr = 2e-3;
                runs.push((v, c));
            }
        }
        "sunspots" => {
            let f = data.join("sunspots/monthly-sunspots.csv");
            if !f.exists() {
                return Err(config_err(
                    "data",
                    f.display(),
                    "the sunspots file is missing (expected ../shared/data/sunspots/monthly-sunspots.csv)",
                ));
            }
            for cell in ["lstm", "gru"] {
                let v = cell.to_string();
                let mut c = base(Task::Forecast, out, &v, 1);
                c.model.cell = cell.parse()?;
                c.model.hidden = if quick { 16 } else { 64 };
                c.data.path = Some(f.clone());
                c.data.date_column = Some("Month".into());
                c.data.window = if quick { 24 } else { 132 };
                c.train.epochs = if quick { 2 } else { 30 };
                c.train.lr = 2e-3;
                c.train.patience = if quick { 0 } else { 8 };
                runs.push((v, c));
            }
        }
        other => return Err(config_err("experiment", other, format!("expected one of {}", EXPERIMENTS.join(", ")))),
    }
    Ok(runs)
}

/// Seasonal-naive RMSE on the validation part of a forecasting config: the
/// value one season (`period` rows) earlier predicts each target.
pub fn seasonal_naive(cfg: &TrainConfig, period: usize) -> Result<f64> {
    let path =
        cfg.data.path.as_deref().ok_or_else(|| config_err("data.path", "missing", "seasonal-naive needs a file"))?;
    let opts = recurrent_data::CsvOptions {
        header: cfg.data.header,
        delimiter: b',',
        date_column: cfg.data.date_column.clone(),
    };
    let t = recurrent_data::read_table(path, &opts)?;
    let col = &t.columns[0];
    let n = col.len();
    let nv = (n as f64 * cfg.data.val_fraction).round() as usize;
    let nt = (n as f64 * cfg.data.test_fraction).round() as usize;
    let (lo, hi) = (n - nv - nt, n - nt);
    // The same windows as the model: targets at rows lo+window .. hi.
    let (mut se, mut k) = (0.0, 0usize);
    for r in (lo + cfg.data.window).max(period)..hi {
        let e = col[r] - col[r - period];
        se += e * e;
        k += 1;
    }
    Ok((se / k.max(1) as f64).sqrt())
}

/// Runs an experiment; `report(line)` hears one line per finished run. With
/// `only` non-empty, runs just the variants containing one of its strings.
pub fn run(
    name: &str,
    quick: bool,
    only: &[String],
    out: &Path,
    data: &Path,
    mut report: impl FnMut(&RunResult),
) -> Result<Vec<RunResult>> {
    let mut results = Vec::new();
    let runs: Vec<(String, TrainConfig)> = plan(name, quick, out, data)?
        .into_iter()
        .filter(|(v, _)| only.is_empty() || only.iter().any(|o| v.contains(o.as_str())))
        .collect();
    if runs.is_empty() {
        return Err(config_err("only", only.join(","), format!("matches no variant of {name}")));
    }
    for (variant, cfg) in runs {
        let t0 = Instant::now();
        let s = train::train(&cfg, train::Mode::Replace, &mut Silent)?;
        let wall_s = t0.elapsed().as_secs_f64();
        let vals: Vec<f64> = std::fs::read_to_string(s.out_dir.join("metrics.jsonl"))
            .map_err(|e| recurrent::error::data_err(s.out_dir.join("metrics.jsonl"), None, e.to_string()))?
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| v["val_loss"].as_f64())
            .collect();
        let first_val_loss = vals.first().copied().unwrap_or(f64::NAN);
        let best_val_loss = vals.iter().copied().fold(f64::INFINITY, f64::min);
        let mut baselines: Vec<(String, f64)> = s.baseline.clone().into_iter().collect();
        if name == "sunspots" {
            // The solar cycle is about 11 years: the seasonal-naive forecast repeats the value 132 months earlier.
            baselines.push(("seasonal naive (132 months)".into(), seasonal_naive(&cfg, 132)?));
        }
        let success = match name {
            "adding" => Some(s.best_val.metric < 0.01),
            "copy" => Some(s.best_val.metric > 0.99),
            _ => None,
        };
        let r = RunResult {
            experiment: name.into(),
            variant,
            seed: cfg.seed,
            config: cfg.clone(),
            wall_s,
            metric: s.metric.clone(),
            val: s.best_val.metric,
            test: s.test.map(|t| t.metric),
            baselines,
            first_val_loss,
            best_val_loss,
            success,
        };
        report(&r);
        results.push(r);
    }
    Ok(results)
}

/// A Markdown table of results.
pub fn markdown(results: &[RunResult]) -> String {
    let mut s = String::from("| experiment | variant | seed | wall time | metric | validation | test | baseline | success |\n|---|---|---|---|---|---|---|---|---|\n");
    for r in results {
        s.push_str(&format!(
            "| {} | {} | {} | {:.1} s | {} | {:.4} | {} | {} | {} |\n",
            r.experiment,
            r.variant,
            r.seed,
            r.wall_s,
            r.metric,
            r.val,
            r.test.map_or("-".into(), |t| format!("{t:.4}")),
            if r.baselines.is_empty() {
                "-".to_string()
            } else {
                r.baselines.iter().map(|(d, v)| format!("{d}: {v:.4}")).collect::<Vec<_>>().join("; ")
            },
            r.success.map_or("-", |b| if b { "yes" } else { "no" })
        ));
    }
    s
}

/// Where a suite run writes: <out>/<experiment>.
pub fn out_dir(out: &Path, name: &str) -> PathBuf {
    out.join(name)
}
