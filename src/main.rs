//! The `recurrent` command: a thin layer over the library. `main` parses,
//! validates into a config, calls the library and maps errors to exit codes
//! (2 for bad input, 1 for anything else).

use anyhow::Result;
use clap::{Parser, Subcommand};
use recurrent::bench;
use std::process::ExitCode;

mod demo;

#[derive(Parser, Debug)]
#[command(name = "recurrent", version, about = "Train Elman RNN, LSTM and GRU networks, exact to PyTorch")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train a small LSTM on a generated task and print its loss falling (the default).
    Demo(demo::DemoArgs),
    /// Time the shared benchmark configurations; one JSON line per measurement,
    /// with the fields of ../shared/bench/pytorch_peer.py.
    Bench(BenchArgs),
}

#[derive(clap::Args, Debug)]
struct BenchArgs {
    /// train (forward + backward + Adam step), infer (forward only) or stream (one cell step, batch 1).
    #[arg(long, value_parser = ["train", "infer", "stream"])]
    mode: String,
    /// Comma-separated configurations among S, M, L, LM.
    #[arg(long, default_value = "S,M,L,LM")]
    configs: String,
    /// Comma-separated cells among rnn, lstm, gru.
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
        _ => Err(recurrent::Error::Config { what: "threads".into(), value: v.into(), reason: "must be a whole number >= 1".into() }),
    })?;
    if !(a.seconds > 0.0 && a.seconds.is_finite()) {
        return Err(UserError(format!("--seconds: {} must be a positive number", a.seconds)).into());
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command.unwrap_or(Command::Demo(demo::DemoArgs::default())) {
        Command::Demo(a) => demo::run(&a),
        Command::Bench(a) => run_bench(&a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.downcast_ref::<UserError>().is_some() || e.downcast_ref::<recurrent::Error>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}
