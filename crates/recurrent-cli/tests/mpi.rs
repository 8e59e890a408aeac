//! Data-parallel training over MPI (feature `mpi`): the same training with 1
//! and with 2 (or 3) processes at the same global batch and seed gives the
//! same parameters; a rank with bad data stops the whole job with one message
//! and leaves the checkpoints alone; a run resumes with another number of
//! processes. Needs `mpirun` (Open MPI or MPICH) on the PATH.
#![cfg(feature = "mpi")]

#[path = "support/f64_parallel.rs"]
mod f64_parallel;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_recurrent");

/// One MPI job at a time: Open MPI's launchers race on their session folder
/// when several start at once, and the machine has few cores anyway.
static ONE_JOB: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_job() -> std::sync::MutexGuard<'static, ()> {
    ONE_JOB.lock().unwrap_or_else(|e| e.into_inner())
}

/// `mpirun` with the options a 2-core machine (and root, in CI containers) needs.
fn mpirun() -> Command {
    let mut c = Command::new("mpirun");
    c.arg("--oversubscribe");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        c.arg("--allow-run-as-root");
    }
    c
}

/// Runs `recurrent train ARGS` on `n` processes (`n == 0`: plainly, without mpirun).
fn train(n: usize, args: &[&str]) -> Output {
    let _one = one_job();
    let out = if n == 0 {
        Command::new(BIN).arg("train").args(args).output()
    } else {
        mpirun().args(["-n", &n.to_string(), BIN, "train"]).args(args).output()
    }
    .expect("run recurrent");
    assert!(
        out.status.success(),
        "{n} processes, {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The tensors of a safetensors file, by name, as f32.
fn params(path: &Path) -> Vec<(String, Vec<f32>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<(String, Vec<f32>)> = st
        .tensors()
        .into_iter()
        // A run state: its parameters after the last epoch (not the optimizer's slots).
        .filter(|(name, _)| name == "params")
        .map(|(name, t)| {
            let v = t.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
            (name, v)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Largest relative difference of two parameter sets, tensor by tensor:
/// max |a - b| / max |a| (the norm-wise relative error in the max norm; an
/// element-wise ratio would be dominated by parameters that happen to be
/// near zero, where f32 rounding of a sum in another order is all there is).
fn max_rel_diff(a: &Path, b: &Path) -> f64 {
    let (pa, pb) = (params(a), params(b));
    assert_eq!(pa.len(), pb.len());
    let mut worst = 0.0f64;
    for ((na, va), (nb, vb)) in pa.iter().zip(&pb) {
        assert_eq!(na, nb);
        assert_eq!(va.len(), vb.len());
        let scale = va.iter().fold(0.0f64, |m, x| m.max(x.abs() as f64)).max(f64::MIN_POSITIVE);
        let diff = va.iter().zip(vb).fold(0.0f64, |m, (x, y)| m.max((*x as f64 - *y as f64).abs()));
        worst = worst.max(diff / scale);
    }
    worst
}

fn dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Trains with 1 and with `n` processes and returns the largest relative difference of the final parameters.
fn compare(n: usize, args: &[&str]) -> f64 {
    let d = dir();
    let (one, many) = (d.path().join("one"), d.path().join("many"));
    train(0, &[args, &["--out", s(&one)]].concat());
    train(n, &[args, &["--out", s(&many)]].concat());
    let d = max_rel_diff(&one.join("state.safetensors"), &many.join("state.safetensors"));
    eprintln!("1 vs {n} processes: relative difference {d:e}");
    d
}

const TOL: f64 = 1e-5;

#[test]
fn two_processes_match_one_forecast() {
    // Batch 16 splits 8 + 8; MSE on a last-step head, Adam, clipping by global norm.
    let d = compare(
        2,
        &[
            "--task",
            "mackey-glass",
            "--length",
            "400",
            "--batch",
            "16",
            "--epochs",
            "1",
            "--max-steps",
            "6",
            "--layers",
            "2",
            "--hidden",
            "12",
            "--clip-norm",
            "0.5",
            "--threads",
            "1",
        ],
    );
    assert!(d < TOL, "relative difference {d:e}");
}

/// A token-classification CSV: label, text of 3 to 20 characters (sequences of different lengths).
fn tokens_csv(path: &Path, rows: usize) {
    let mut text = String::from("label,text\n");
    let mut x = 7u64;
    for r in 0..rows {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let len = 3 + (x >> 33) as usize % 18;
        let word: String = (0..len).map(|k| (b'a' + ((x >> (k % 40)) % 6) as u8) as char).collect();
        text += &format!("{},{word}\n", if word.matches('a').count() > len / 6 { "many" } else { "few" });
        let _ = r;
    }
    std::fs::write(path, text).unwrap();
}

#[test]
fn a_batch_that_does_not_divide_matches_with_ragged_sequences_and_truncated_bptt() {
    // Batch 7 over 2 processes: 4 + 3 examples of different lengths (masked,
    // padded to the batch's longest), truncated BPTT windows of 4 steps: the
    // gradient is weighted by each shard's scored targets.
    let d = dir();
    let data = d.path().join("words.csv");
    tokens_csv(&data, 120);
    let diff = compare(
        2,
        &[
            "--task",
            "tokens",
            "--data",
            s(&data),
            "--batch",
            "7",
            "--epochs",
            "1",
            "--max-steps",
            "8",
            "--estimator",
            "tbptt",
            "--k1",
            "4",
            "--k2",
            "6",
            "--hidden",
            "10",
            "--threads",
            "1",
        ],
    );
    assert!(diff < TOL, "relative difference {diff:e}");
}

#[test]
fn streams_are_shared_out_contiguously_for_a_character_model() {
    // 5 parallel streams over 2 processes (3 + 2), state carried across windows.
    let d = dir();
    let data = d.path().join("text.txt");
    let text: String = (0..300).map(|i| ["the cat sat. ", "a dog ran! ", "we go on, "][i % 3]).collect();
    std::fs::write(&data, text).unwrap();
    let diff = compare(
        2,
        &[
            "--task",
            "charlm",
            "--data",
            s(&data),
            "--batch",
            "5",
            "--k1",
            "20",
            "--k2",
            "20",
            "--epochs",
            "1",
            "--max-steps",
            "6",
            "--hidden",
            "16",
            "--threads",
            "1",
        ],
    );
    assert!(diff < TOL, "relative difference {diff:e}");
}

#[test]
fn a_run_resumes_with_another_number_of_processes() {
    let d = dir();
    let common = ["--task", "mackey-glass", "--length", "300", "--batch", "16", "--hidden", "8", "--threads", "1"];
    let straight = d.path().join("straight");
    train(0, &[&common[..], &["--epochs", "2", "--out", s(&straight)]].concat());
    // Epoch 1 on 2 processes, epoch 2 on 3.
    let split = d.path().join("split");
    train(2, &[&common[..], &["--epochs", "1", "--out", s(&split)]].concat());
    train(3, &["--resume", s(&split), "--epochs", "2"]);
    let diff = max_rel_diff(&straight.join("state.safetensors"), &split.join("state.safetensors"));
    assert!(diff < TOL, "relative difference {diff:e}");
    let lines = std::fs::read_to_string(split.join("metrics.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 2);
}

/// The files of a finished run, by name.
fn snapshot(run: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut v: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(run)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| (p.clone(), std::fs::read(&p).unwrap()))
        .collect();
    v.sort();
    v
}

/// Runs an MPMD job (one argument list per rank) that must fail; returns stderr and the wall time.
fn failing_job(ranks: &[Vec<String>]) -> (String, Duration) {
    let mut c = mpirun();
    for (k, args) in ranks.iter().enumerate() {
        if k > 0 {
            c.arg(":");
        }
        c.args(["-n", "1", BIN, "train"]).args(args);
    }
    let _one = one_job();
    let t = Instant::now();
    let out = c.output().expect("run mpirun");
    let took = t.elapsed();
    assert!(!out.status.success(), "the job must fail: {}", String::from_utf8_lossy(&out.stdout));
    (String::from_utf8_lossy(&out.stderr).into_owned(), took)
}

/// A forecasting CSV of a noisy sine; `bump` is added to the value at t = 57.
fn series_csv(path: &Path, n: usize, bump: f64) {
    let mut text = String::from("t,v\n");
    for i in 0..n {
        let v = (i as f64 * 0.3).sin() + 0.01 * (i % 7) as f64 + if i == 57 { bump } else { 0.0 };
        text += &format!("{i},{v:.5}\n");
    }
    std::fs::write(path, text).unwrap();
}

#[test]
fn a_rank_with_a_corrupt_copy_of_the_data_stops_the_job_with_one_message() {
    let d = dir();
    let good = d.path().join("series.csv");
    series_csv(&good, 200, 0.0);
    let run = d.path().join("run");
    let args = |data: &Path| -> Vec<String> {
        [
            "--task",
            "forecast",
            "--data",
            s(data),
            "--date-column",
            "t",
            "--window",
            "8",
            "--batch",
            "16",
            "--epochs",
            "1",
            "--hidden",
            "8",
            "--threads",
            "1",
            "--out",
            s(&run),
            "--overwrite",
        ]
        .map(String::from)
        .to_vec()
    };
    train(0, &args(&good).iter().map(String::as_str).collect::<Vec<_>>());
    let before = snapshot(&run);
    // As when one host's copy of the file is damaged: rank 1 reads a corrupt file.
    let bad = d.path().join("series_bad.csv");
    let text = std::fs::read_to_string(&good).unwrap().replace("\n57,", "\n57,0.1x");
    std::fs::write(&bad, text).unwrap();
    let (stderr, took) = failing_job(&[args(&good), args(&bad)]);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].starts_with("error: rank 1: ") && errors[0].contains("series_bad.csv:59"), "{}", errors[0]);
    assert!(took < Duration::from_secs(20), "took {took:?}");
    assert_eq!(snapshot(&run), before, "the checkpoints must stay as they were");

    // A copy that parses but differs is caught too (the ranks would train on different data).
    let other = d.path().join("series_other.csv");
    series_csv(&other, 200, 0.5);
    let (stderr, _) = failing_job(&[args(&good), args(&other)]);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("differs from rank 0's copy"), "{}", errors[0]);
    assert_eq!(snapshot(&run), before);
}

#[test]
fn a_loss_that_turns_nan_stops_every_rank_with_one_message() {
    let d = dir();
    let run = d.path().join("run");
    let common = [
        "--task",
        "mackey-glass",
        "--length",
        "300",
        "--batch",
        "16",
        "--hidden",
        "8",
        "--threads",
        "1",
        "--optimizer",
        "sgd",
        "--clip-norm",
        "0",
        "--out",
        s(&run),
    ];
    train(0, &[&common[..], &["--epochs", "1"]].concat());
    // The checkpoints (a new run in the same folder rewrites config.toml and metrics.jsonl first).
    let checkpoints = |run: &Path| {
        let mut v = snapshot(run);
        v.retain(|(p, _)| p.extension().is_some_and(|e| e == "safetensors"));
        v
    };
    let before = checkpoints(&run);
    assert_eq!(before.len(), 2);
    let _one = one_job();
    let t = Instant::now();
    // The first step's update is astronomically large: the next loss is not finite.
    let out = mpirun()
        .args(["-n", "2", BIN, "train"])
        .args(common)
        .args(["--epochs", "1", "--lr", "1e30", "--overwrite"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(t.elapsed() < Duration::from_secs(20));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("not finite"), "{}", errors[0]);
    assert_eq!(checkpoints(&run), before);
}

/// Set in the environment of the test binary when it runs as an MPI rank.
const WORKER: &str = "RECURRENT_F64_WORKER";

#[test]
fn f64_training_through_the_library_matches_to_1e_12() {
    if let Ok(out) = std::env::var(WORKER) {
        // One rank of the job below: train, rank 0 writes the parameters.
        let comm = recurrent::distributed::MpiComm::init().unwrap();
        let p = f64_parallel::train_f64(&comm);
        if recurrent::distributed::Comm::rank(&comm) == 0 {
            std::fs::write(out, p.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
        }
        return;
    }
    let d = dir();
    let me = std::env::current_exe().unwrap();
    let run = |n: usize| -> Vec<f64> {
        let out = d.path().join(format!("p{n}"));
        let _one = one_job();
        let status = mpirun()
            .args(["-n", &n.to_string()])
            .arg(&me)
            .args(["--exact", "f64_training_through_the_library_matches_to_1e_12", "--test-threads", "1", "--quiet"])
            .env(WORKER, &out)
            .output()
            .unwrap();
        assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
        std::fs::read(&out).unwrap().chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().unwrap())).collect()
    };
    let (one, two) = (run(1), run(2));
    let diff = f64_parallel::rel_diff(&one, &two);
    eprintln!("f64, 1 vs 2 processes: relative difference {diff:e}");
    assert!(diff < 1e-12, "relative difference {diff:e}");
}
