//! The library's Trainer, driven directly on in-memory arrays (no command
//! line), gives exactly the parameters `recurrent train` gives on the same
//! data and seed, for every gradient method.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use recurrent::grad::tbptt::Truncation;
use recurrent::grad::Estimator;
use recurrent::train::{DataSource, Examples, Metric, RunState, Silent, TargetSet, TrainData, Trainer, TrainerConfig};
use recurrent::{CellKind, HeadKind, InitConfig, LossKind, Model, ModelConfig, RnnConfig};
use std::process::Command;

const SEED: u64 = 7;
const N: usize = 120;
const T: usize = 6;
const HIDDEN: usize = 4;
const EPOCHS: usize = 2;
const BATCH: usize = 16;

/// The adding problem as `recurrent train --task adding` generates and splits it
/// (15 % validation, 15 % test, in order).
fn adding_parts() -> (Examples, Examples) {
    let mut rng = ChaCha8Rng::seed_from_u64(SEED ^ 0x5eed_da7a);
    let (x, y) = recurrent_data::adding_problem(N, T, &mut rng).unwrap();
    let nv = (N as f64 * 0.15).round() as usize;
    let ntr = N - 2 * nv;
    let part = |r: std::ops::Range<usize>| {
        let rows = y[r.clone()].iter().map(|&v| vec![v]).collect();
        let xs = &x[r.start * T * 2..r.end * T * 2];
        Examples::from_arrays(xs, [r.len(), T, 2], None, TargetSet::Real { width: 1, rows }).unwrap()
    };
    (part(0..ntr), part(ntr..ntr + nv))
}

fn model_config() -> ModelConfig {
    ModelConfig {
        rnn: RnnConfig::new(CellKind::Lstm, 2, HIDDEN),
        vocab: None,
        head: HeadKind::Last,
        out_size: 1,
        loss: LossKind::Mse,
    }
}

fn initial_model() -> Model<f32> {
    Model::<f32>::new(model_config(), &InitConfig::default(), &mut ChaCha8Rng::seed_from_u64(SEED)).unwrap()
}

fn library_run(method: Estimator) -> Vec<f32> {
    let (train, val) = adding_parts();
    let model = initial_model();
    let cfg = TrainerConfig {
        method,
        truncation: Truncation::new(3, 4).unwrap(),
        epochs: EPOCHS,
        batch: BATCH,
        metric: Metric::Mse,
        // The command line seeds the initialisation with --seed and the training RNG with --seed + 1.
        seed: SEED + 1,
        threads: 1,
        ..TrainerConfig::default()
    };
    let mut trainer = Trainer::new(model, cfg).unwrap();
    let report = trainer.fit(TrainData::Examples(&train), TrainData::Examples(&val), &mut Silent).unwrap();
    assert_eq!(report.epochs_run, EPOCHS);
    // One step per batch (truncated BPTT updates per window inside it).
    assert_eq!(report.steps, (EPOCHS * train.len().div_ceil(BATCH)) as u64);
    trainer.model().params.clone()
}

fn cli_run(method: Estimator) -> Vec<f32> {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("run");
    let args = [
        "train",
        "--task",
        "adding",
        "--length",
        &T.to_string(),
        "--samples",
        &N.to_string(),
        "--hidden",
        &HIDDEN.to_string(),
        "--epochs",
        &EPOCHS.to_string(),
        "--batch",
        &BATCH.to_string(),
        "--estimator",
        &method.to_string(),
        "--k1",
        "3",
        "--k2",
        "4",
        "--seed",
        &SEED.to_string(),
        "--threads",
        "1",
        "--out",
        out.to_str().unwrap(),
    ];
    let o = Command::new(env!("CARGO_BIN_EXE_recurrent")).args(args).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    RunState::load(&out.join("state.safetensors")).unwrap().0.params
}

#[test]
fn the_library_trainer_equals_recurrent_train_for_every_gradient_method() {
    for method in
        [Estimator::Bptt, Estimator::Tbptt, Estimator::Rtrl, Estimator::Uoro, Estimator::Snap1, Estimator::Snap2]
    {
        let (lib, cli) = (library_run(method), cli_run(method));
        assert_eq!(lib.len(), cli.len());
        let same = lib.iter().zip(&cli).all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same, "{method}: the Trainer and recurrent train end with different parameters");
        // Training moved them: the comparison is not of two untouched initialisations.
        assert_ne!(lib, initial_model().params, "{method}: the parameters did not change");
    }
}
