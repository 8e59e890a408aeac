//! The `recurrent` command: a thin layer over the library. `main` parses,
//! validates into a config, calls the library and maps errors to exit codes:
//! 2 for anything the user can fix (bad input, bad option), 1 otherwise.
//! With no arguments it runs `train` on its built-in default.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use recurrent::checkpoint;
use recurrent::train::{DataSource, MetricsLine, Observer, StepInfo};
use recurrent_cli::bench;
use recurrent_cli::train::{self, usage, TrainConfig};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

mod cli_train;

/// The binary's allocator (feature `mimalloc`, on by default; the library
/// sets none). With its default settings.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(name = "recurrent", version, about = "Train Elman RNN, LSTM and GRU networks, exact to PyTorch")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train a model (the default command: with no options, an LSTM forecasting a generated Mackey-Glass series).
    Train(cli_train::TrainArgs),
    /// Loss and metric of a checkpoint on a data file.
    Eval(EvalArgs),
    /// Predictions of a checkpoint for a data file, as CSV (forecasts over the horizon in data units, or classes).
    Predict(PredictArgs),
    /// Text from a character-level language model.
    Generate(GenerateArgs),
    /// Loss curves from a metrics.jsonl file.
    Plot(PlotArgs),
    /// The classic long-range experiments: adding, copy, smnist, charlm, sunspots (results table + JSON).
    Reproduce(ReproduceArgs),
    /// Vanishing and exploding gradients: ||dL/dh_t|| per step and layer, spectral radius and
    /// largest singular value of the recurrent weights, gate saturation; a table and a plot.
    Diagnose(DiagnoseArgs),
    /// Time the shared benchmark configurations; one JSON line per measurement,
    /// with the fields of ../shared/bench/pytorch_peer.py.
    Bench(BenchArgs),
}

/// A batch size: a whole number of at least 1.
fn batch_size(v: &str) -> std::result::Result<usize, String> {
    match v.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("{:?} is not a batch size: a whole number of at least 1", recurrent::error::clean(v, 60))),
    }
}

#[derive(clap::Args, Debug)]
struct EvalArgs {
    /// Checkpoint (model.safetensors) written by `train` or from PyTorch as the README shows.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Data file to evaluate on (same format as in training).
    #[arg(long)]
    data: PathBuf,
    /// Batch size.
    #[arg(long, default_value_t = 64, value_parser = batch_size)]
    batch: usize,
}

#[derive(clap::Args, Debug)]
struct PredictArgs {
    #[arg(long)]
    checkpoint: PathBuf,
    /// Input data file (CSV with the model's columns, .ts, or token CSV/TSV).
    #[arg(long)]
    data: PathBuf,
    /// Output CSV [default: standard output]
    #[arg(long)]
    output: Option<PathBuf>,
    #[arg(long, default_value_t = 64, value_parser = batch_size)]
    batch: usize,
}

#[derive(clap::Args, Debug)]
struct GenerateArgs {
    #[arg(long)]
    checkpoint: PathBuf,
    /// Text to start from.
    #[arg(long, default_value = "")]
    prompt: String,
    /// Characters to generate.
    #[arg(long, default_value_t = 200)]
    length: usize,
    /// Sampling temperature (> 0).
    #[arg(long, default_value_t = 1.0)]
    temperature: f64,
    /// Sample among the k most likely characters (0: all).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(clap::Args, Debug)]
struct PlotArgs {
    /// metrics.jsonl written by `train`.
    #[arg(long)]
    metrics: PathBuf,
    /// Output image (.svg or .png).
    #[arg(long)]
    output: PathBuf,
}

#[derive(clap::Args, Debug)]
struct ReproduceArgs {
    /// adding | copy | smnist | charlm | sunspots
    name: String,
    /// Small settings (a smoke test: the loss falls) instead of the full ones.
    #[arg(long)]
    quick: bool,
    /// Output folder (one subfolder per run, results.md and results.json).
    #[arg(long, default_value = "runs/reproduce")]
    out: PathBuf,
    /// The shared data folder (MNIST, tiny-shakespeare, sunspots).
    #[arg(long, default_value = "../shared/data")]
    data: PathBuf,
    /// Only the variants whose name contains one of these (comma-separated), e.g. "T=50,T=100".
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
}

#[derive(clap::Args, Debug)]
struct DiagnoseArgs {
    /// Checkpoint(s) to diagnose (repeat to compare models in one plot); without one, fresh models
    /// are built from the training options below (one per --cells entry).
    #[arg(long)]
    checkpoint: Vec<PathBuf>,
    /// Fresh models to compare (comma-separated cells) when no checkpoint is given [default: the --cell option]
    #[arg(long, value_delimiter = ',')]
    cells: Vec<recurrent::CellKind>,
    /// Plot of ||dL/dh_t|| against t, log scale (.svg or .png).
    #[arg(long, default_value = "diagnose.svg")]
    output: PathBuf,
    /// JSON report (optional).
    #[arg(long)]
    json: Option<PathBuf>,
    /// The data and model options, as for `train` (the first validation batch is used).
    #[command(flatten)]
    train: cli_train::TrainArgs,
}

#[derive(clap::Args, Debug)]
struct BenchArgs {
    /// train (forward + backward + Adam step), infer (forward only), stream (one cell step, batch 1),
    /// or online (one training step of each gradient estimator against the hidden size).
    #[arg(long, value_parser = ["train", "infer", "stream", "online"])]
    mode: String,
    /// online mode: comma-separated estimators among bptt, rtrl, uoro, snap1, snap2.
    #[arg(long, default_value = "bptt,rtrl,uoro,snap1,snap2")]
    estimators: String,
    /// online mode: comma-separated hidden sizes.
    #[arg(long, default_value = "16,32,64,128")]
    hidden: String,
    /// Comma-separated configurations among S, M, L, LM.
    #[arg(long, default_value = "S,M,L,LM")]
    configs: String,
    /// Comma-separated cells among rnn, lstm, gru, mingru, minlstm.
    #[arg(long, default_value = "rnn,lstm,gru")]
    cells: String,
    /// Comma-separated thread counts.
    #[arg(long, default_value = "1,2")]
    threads: String,
    /// Seconds of timing per measurement (at least 10 repetitions).
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
}

/// An error that is the user's to fix: exit status 2.
#[derive(Debug)]
struct UserError(String);
impl std::fmt::Display for UserError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for UserError {}

fn parse_list<T>(what: &str, s: &str, f: impl Fn(&str) -> recurrent::Result<T>) -> Result<Vec<T>> {
    s.split(',').map(|v| f(v.trim()).map_err(|e| UserError(format!("--{what}: {e}")).into())).collect()
}

fn run_bench(a: &BenchArgs) -> Result<()> {
    let cells = parse_list("cells", &a.cells, bench::cell)?;
    let configs = parse_list("configs", &a.configs, bench::config)?;
    let threads = parse_list("threads", &a.threads, |v| match v.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(recurrent::Error::Config {
            what: "threads".into(),
            value: v.into(),
            reason: "must be a whole number >= 1".into(),
        }),
    })?;
    if !(a.seconds > 0.0 && a.seconds.is_finite()) {
        return Err(UserError(format!("--seconds: {} must be a positive number", a.seconds)).into());
    }
    if a.mode == "online" {
        let ests = parse_list("estimators", &a.estimators, recurrent::grad::Estimator::parse)?;
        let hs = parse_list("hidden", &a.hidden, |v| match v.parse::<usize>() {
            Ok(n) if n >= 1 => Ok(n),
            _ => Err(recurrent::Error::Config {
                what: "hidden".into(),
                value: v.into(),
                reason: "must be a whole number >= 1".into(),
            }),
        })?;
        for &t in &threads {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(t).build()?;
            for &c in &cells {
                for &h in &hs {
                    for &e in &ests {
                        let mut line = serde_json::to_value(pool.install(|| bench::bench_online(c, e, h, a.seconds))?)?;
                        line["threads"] = t.into();
                        println!("{line}");
                    }
                }
            }
        }
        return Ok(());
    }
    for &t in &threads {
        for &c in &cells {
            if a.mode == "stream" {
                println!("{}", serde_json::to_string(&bench::bench_stream(c, t)?)?);
                continue;
            }
            for cfg in &configs {
                println!("{}", serde_json::to_string(&bench::bench_model(c, cfg, a.mode == "train", t, a.seconds)?)?);
            }
        }
    }
    Ok(())
}

/// Progress: a bar on a terminal, plain lines otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    last_loss: f64,
}

impl Observer for Progress {
    fn epoch_start(&mut self, epoch: usize, epochs: usize, batches: u64) {
        if std::io::stderr().is_terminal() {
            let bar = indicatif::ProgressBar::new(batches);
            bar.set_style(
                indicatif::ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg} eta {eta}")
                    .expect("static template")
                    .progress_chars("=> "),
            );
            bar.set_prefix(format!("{epoch}/{epochs}"));
            self.bar = Some(bar);
        }
    }
    fn step(&mut self, s: &StepInfo) {
        if s.loss.is_finite() {
            self.last_loss = s.loss;
        }
        if let Some(b) = &self.bar {
            b.inc(1);
            b.set_message(format!("loss {:.4} {:.0} tok/s", self.last_loss, s.tokens_per_s));
        }
    }
    fn validation(&mut self, m: &MetricsLine) -> recurrent::Result<()> {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        println!(
            "epoch {:>3} step {:>6}  train {:.5}  val {:.5}  {} {:.5}  lr {:.2e}  |g| {:.3} (max {:.3}, clipped {:.0}%)  {:.0} tok/s",
            m.epoch, m.step, m.train_loss, m.val_loss, m.metric, m.val_metric, m.lr, m.grad_norm, m.grad_norm_max, 100.0 * m.clip_fraction, m.tokens_per_s
        );
        if !m.warnings.is_empty() {
            println!("          {} warning(s) in this interval, first: {}", m.warnings.len(), m.warnings[0]);
        }
        Ok(())
    }
    fn info(&mut self, msg: &str) {
        println!("{msg}");
    }
    fn warn(&mut self, msg: &str) {
        if let Some(b) = &self.bar {
            b.println(format!("warning: {msg}"));
        } else {
            eprintln!("warning: {msg}");
        }
    }
}

/// Set on ranks other than 0 of a distributed run: they print nothing, not
/// even errors (every failure is agreed on, and rank 0 reports it).
static QUIET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn run_train(a: &cli_train::TrainArgs) -> Result<()> {
    // One rank of an `mpirun` job (feature `mpi`), or the only process.
    let comm = recurrent::distributed::from_environment()?;
    let lead = comm.rank() == 0;
    let mut cfg = match (&a.resume, &a.config) {
        (Some(dir), _) => {
            let p = dir.join("config.toml");
            let text =
                std::fs::read_to_string(&p).map_err(|e| UserError(format!("{}: cannot resume: {e}", p.display())))?;
            TrainConfig::from_toml(&text, &p.display().to_string())?
        }
        (None, Some(p)) => {
            let text =
                std::fs::read_to_string(p).map_err(|e| UserError(format!("{}: cannot read: {e}", p.display())))?;
            TrainConfig::from_toml(&text, &p.display().to_string())?
        }
        (None, None) => TrainConfig::default(),
    };
    let saved = cfg.clone();
    a.apply(&mut cfg);
    if let Some(dir) = &a.resume {
        cfg.out = Some(dir.clone());
        saved.check_resume(&cfg)?;
    }
    cfg.validate()?;
    train::settle_out(&mut cfg, a.mode())?;
    let out = cfg.out_dir();
    if !lead {
        train::train_with(&cfg, a.mode(), &mut recurrent::train::Silent, comm.as_ref())?;
        return Ok(());
    }
    let procs = if comm.size() > 1 { format!("; {} processes", comm.size()) } else { String::new() };
    println!(
        "task {}: {} hidden {} x {} layer(s){}; seed {}{procs}; output folder {}",
        cfg.task,
        cfg.model.cell,
        cfg.model.hidden,
        cfg.model.layers,
        if cfg.model.bidirectional { ", bidirectional" } else { "" },
        cfg.seed,
        out.display()
    );
    let mut rep = Progress { bar: None, last_loss: f64::NAN };
    let s = train::train_with(&cfg, a.mode(), &mut rep, comm.as_ref())?;
    let base = s.baseline.as_ref().map_or(String::new(), |(what, v)| format!("  ({what}: {v:.5})"));
    println!("best model: validation {} {:.5}{base}", s.metric, s.best_val.metric);
    if s.metric == "bpc" {
        println!("            validation loss {:.4} nats/char = {:.4} bits/char", s.best_val.loss, s.best_val.metric);
    } else if s.metric != "mse" {
        // The best model is the epoch with the lowest validation loss, which need not have the best metric.
        println!("            chosen by the lowest validation loss ({:.5})", s.best_val.loss);
    }
    if let Some(t) = s.test {
        let tb = s.test_baseline.as_ref().map_or(String::new(), |(what, v)| format!("  ({what}: {v:.5})"));
        println!("            test {} {:.5}{tb}", s.metric, t.metric);
    }
    println!("checkpoint: {}", s.out_dir.join("model.safetensors").display());
    println!("metrics:    {}", s.out_dir.join("metrics.jsonl").display());
    for p in &s.plots {
        println!("plot:       {}", p.display());
    }
    Ok(())
}

fn run_diagnose(a: &DiagnoseArgs) -> Result<()> {
    use recurrent::diagnose::{diagnose, table};
    use recurrent_cli::plot::{line_chart, Series};
    let mut cfg = match &a.train.config {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).map_err(|e| UserError(format!("{}: cannot read: {e}", p.display())))?;
            TrainConfig::from_toml(&text, &p.display().to_string())?
        }
        None => TrainConfig::default(),
    };
    a.train.apply(&mut cfg);
    cfg.validate()?;
    let prep = train::task::prepare(&cfg)?;
    let val = match &prep.data {
        train::task::TaskData::Examples { val, .. } => val.clone(),
        train::task::TaskData::Stream { val, .. } => {
            return Err(UserError(format!(
                "diagnose reads examples; task {} is a stream ({} tokens)",
                cfg.task,
                val.len()
            ))
            .into())
        }
    };
    let n = cfg.train.batch.min(val.len());
    let bb = train::make_batch(&val, &(0..n).collect::<Vec<_>>());
    let mut models: Vec<(String, recurrent::Model<f32>)> = Vec::new();
    for p in &a.checkpoint {
        let (m, _) = checkpoint::load::<f32>(p)?;
        models.push((p.display().to_string(), m));
    }
    if models.is_empty() {
        let cells = if a.cells.is_empty() { vec![cfg.model.cell] } else { a.cells.clone() };
        for c in cells {
            let mut cc = cfg.clone();
            cc.model.cell = c;
            cc.validate()?;
            let mcfg = train::model_config(&cc, &prep)?;
            let init = recurrent::InitConfig {
                orthogonal_recurrent: cc.model.orthogonal,
                xavier_input: cc.model.xavier,
                forget_bias: cc.model.forget_bias,
            };
            use rand::SeedableRng;
            let m = recurrent::Model::<f32>::new(mcfg, &init, &mut rand_chacha::ChaCha8Rng::seed_from_u64(cc.seed))?;
            models.push((format!("{c} (fresh)"), m));
        }
    }
    let mut series = Vec::new();
    let mut reports = Vec::new();
    for (name, m) in &models {
        let d = diagnose(m, &bb.batch(), bb.targets()).map_err(|e| {
            let what = if a.checkpoint.is_empty() { "--cells".to_string() } else { format!("--checkpoint {name}") };
            UserError(format!("{what}: does not fit the data of --task {}: {e}", cfg.task))
        })?;
        println!("== {name}");
        print!("{}", table(&d));
        for l in &d.layers {
            let label = if d.layers.len() > 1 {
                format!("{name} layer {}{}", l.layer, if l.direction == 1 { " reverse" } else { "" })
            } else {
                name.clone()
            };
            series.push(Series {
                name: label,
                points: l.grad_norms.iter().enumerate().map(|(t, v)| (t as f64, *v)).collect(),
            });
        }
        reports.push(serde_json::json!({"model": name, "diagnosis": d}));
    }
    line_chart(
        &a.output,
        "Gradient reaching the hidden state at step t",
        "time step t",
        "mean ||dL/dh_t||",
        &series,
        true,
    )?;
    println!("plot: {}", a.output.display());
    if let Some(j) = &a.json {
        checkpoint::write_atomic(j, serde_json::to_string_pretty(&reports)?.as_bytes())?;
        println!("json: {}", j.display());
    }
    Ok(())
}

fn run() -> Result<()> {
    // Ranks other than 0 of an MPI job stay quiet from the start (bad options included).
    let quiet = recurrent::distributed::launcher_rank().is_some_and(|r| r > 0);
    QUIET.store(quiet, std::sync::atomic::Ordering::Relaxed);
    let cli = Cli::try_parse().unwrap_or_else(|e| {
        if !e.use_stderr() {
            e.exit() // --help, --version
        }
        if !quiet {
            // One line (clap adds a usage block and a hint): its first line names the flag.
            let text = e.render().to_string();
            let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("invalid command line");
            let first = first.trim().strip_prefix("error: ").unwrap_or(first.trim());
            eprintln!("error: {} (see --help)", recurrent::error::clean(first, recurrent::error::MAX_LINE_CHARS - 20));
        }
        std::process::exit(2)
    });
    let command = cli.command.unwrap_or(Command::Train(cli_train::TrainArgs::default()));
    if quiet && !matches!(command, Command::Train(_)) {
        // Only training is distributed: under mpirun, rank 0 alone runs the other commands.
        return Ok(());
    }
    match command {
        Command::Train(a) => run_train(&a),
        Command::Eval(a) => {
            let l = usage::load(&a.checkpoint)?;
            let (ev, metric) = usage::eval(&l, &a.data, a.batch)?;
            // JSON has no infinity: a loss that overflowed would print as null, which
            // reads as "no value" and exits 0. A model that overflows on this data is
            // the answer the user must see, so it is an error naming both files.
            if !ev.loss.is_finite() {
                return Err(UserError(format!(
                    "{}: the loss of {} on this data is {} (the model's outputs overflow); no evaluation printed",
                    a.data.display(),
                    a.checkpoint.display(),
                    ev.loss
                ))
                .into());
            }
            println!("{}", serde_json::json!({"loss": ev.loss, "metric": metric, "value": ev.metric}));
            Ok(())
        }
        Command::Predict(a) => {
            let l = usage::load(&a.checkpoint)?;
            let csv = usage::predict(&l, &a.data, a.batch)?;
            match &a.output {
                Some(p) => checkpoint::write_atomic(p, csv.as_bytes()).context("writing predictions")?,
                None => print!("{csv}"),
            }
            Ok(())
        }
        Command::Generate(a) => {
            let l = usage::load(&a.checkpoint)?;
            println!("{}", usage::generate(&l, &a.prompt, a.length, a.temperature, a.top_k, a.seed)?);
            Ok(())
        }
        Command::Plot(a) => Ok(recurrent_cli::plot::plot_metrics(&a.metrics, &a.output)?),
        Command::Diagnose(a) => run_diagnose(&a),
        Command::Reproduce(a) => {
            use recurrent_cli::reproduce;
            let dir = reproduce::out_dir(&a.out, &a.name);
            println!("{} ({} settings) -> {}", a.name, if a.quick { "quick" } else { "full" }, dir.display());
            let results = reproduce::run(&a.name, a.quick, &a.only, &dir, &a.data, |r| {
                println!(
                    "{:<22} {} {:.4} (first val loss {:.4} -> best {:.4}) {:.1} s{}",
                    r.variant,
                    r.metric,
                    r.val,
                    r.first_val_loss,
                    r.best_val_loss,
                    r.wall_s,
                    r.success.map_or("", |s| if s { "  success" } else { "  no success" })
                )
            })?;
            let md = reproduce::markdown(&results);
            checkpoint::write_atomic(&dir.join("results.md"), md.as_bytes())?;
            checkpoint::write_atomic(&dir.join("results.json"), serde_json::to_string_pretty(&results)?.as_bytes())?;
            print!("{md}");
            Ok(())
        }
        Command::Bench(a) => run_bench(&a),
    }
}

fn main() -> ExitCode {
    // Output piped into a program that stops reading (`| head`) ends the
    // process quietly, as for other command-line tools, instead of a panic.
    #[cfg(unix)]
    // SAFETY: restoring the default action of one signal before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the library's messages already name the file, line or key.
            // Control bytes from input files are escaped and the line is capped.
            let msg =
                recurrent::error::clean(&format!("{e:#}").replace('\n', " "), recurrent::error::MAX_LINE_CHARS - 7);
            let quiet = QUIET.load(std::sync::atomic::Ordering::Relaxed);
            if !quiet {
                eprintln!("error: {msg}");
            } else if matches!(e.downcast_ref::<recurrent::Error>(), Some(recurrent::Error::Rank { .. })) {
                // A failure every rank agreed on: rank 0 prints it and gives the job its
                // status. Failing here too would let mpirun abort rank 0 before it prints.
                return ExitCode::SUCCESS;
            }
            let user = e.downcast_ref::<UserError>().is_some()
                || e.downcast_ref::<recurrent::Error>().is_some_and(recurrent::Error::is_user_error);
            ExitCode::from(if user { 2 } else { 1 })
        }
    }
}
