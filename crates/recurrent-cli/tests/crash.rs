//! Kills: a training run killed with SIGKILL at random moments (seeded)
//! always leaves a consistent folder (the previous state or the new one,
//! never a mix), and resuming until the end reaches exactly the checkpoint
//! of an uninterrupted run.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use recurrent::train::RunState;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const ARGS: [&str; 12] =
    ["--task", "adding", "--length", "30", "--samples", "1500", "--hidden", "24", "--epochs", "10", "--threads", "1"];

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_recurrent"))
}

/// What a killed run may leave: every file whole, the state readable and no
/// older than the metrics it counts.
fn check_consistent(dir: &Path) {
    let state = dir.join("state.safetensors");
    if !state.exists() {
        // Killed before its first epoch ended: nothing of the run may be there but the folder.
        assert!(!dir.join("model.safetensors").exists(), "a best model without a run state");
        return;
    }
    let (s, _) = RunState::load(&state).unwrap_or_else(|e| panic!("torn run state: {e}"));
    recurrent::checkpoint::load::<f32>(&dir.join("model.safetensors")).expect("the best model is whole");
    let lines = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap().lines().count();
    assert!(lines >= s.counters.validations, "{lines} metric lines for {} validations", s.counters.validations);
    toml::from_str::<toml::Value>(&std::fs::read_to_string(dir.join("config.toml")).unwrap()).expect("config whole");
}

#[test]
fn killed_runs_resume_to_the_uninterrupted_result() {
    let d = tempfile::tempdir().unwrap();
    let (straight, killed) = (d.path().join("straight"), d.path().join("killed"));
    let ok = bin().arg("train").args(ARGS).args(["--out", straight.to_str().unwrap()]).output().unwrap();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let mut rng = ChaCha8Rng::seed_from_u64(18);
    let mut kills = 0;
    for _ in 0..8 {
        let mut cmd = bin();
        if killed.join("state.safetensors").exists() {
            cmd.args(["train", "--resume", killed.to_str().unwrap()]);
        } else {
            cmd.args(["train"]).args(ARGS).args(["--out", killed.to_str().unwrap(), "--overwrite"]);
        }
        let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(rng.gen_range(5..250)));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            kills += 1;
        }
        child.wait().unwrap();
        check_consistent(&killed);
    }
    eprintln!("{kills} kills");
    assert!(kills >= 3, "only {kills} runs were killed mid-way");
    // Finish: resume (or start) until the end, uninterrupted.
    let mut cmd = bin();
    if killed.join("state.safetensors").exists() {
        cmd.args(["train", "--resume", killed.to_str().unwrap()]);
    } else {
        cmd.args(["train"]).args(ARGS).args(["--out", killed.to_str().unwrap(), "--overwrite"]);
    }
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for f in ["state.safetensors", "model.safetensors"] {
        assert!(std::fs::read(straight.join(f)).unwrap() == std::fs::read(killed.join(f)).unwrap(), "{f} differs");
    }
    let leftovers: Vec<_> = std::fs::read_dir(&killed)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "temporaries of killed runs left: {leftovers:?}");
}
