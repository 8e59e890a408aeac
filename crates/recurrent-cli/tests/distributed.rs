//! Data-parallel training without MPI: ranks as threads (`ThreadComm`) run
//! the same protocol as MPI processes, so the sharding, loss weighting and
//! agreement logic are checked by the default test command too.

use recurrent::distributed::{Comm, ThreadComm};
use recurrent_cli::train::config::Task;
use recurrent_cli::train::{train, train_with, Mode, Silent, TrainConfig};
use std::path::Path;

#[path = "support/f64_parallel.rs"]
mod f64_parallel;

/// Trains `cfg` on `n` thread ranks (rank 0 writes into `cfg.out`).
fn train_on_threads(cfg: &TrainConfig, n: usize) {
    std::thread::scope(|s| {
        let handles: Vec<_> = ThreadComm::group(n)
            .into_iter()
            .map(|comm| s.spawn(move || train_with(cfg, Mode::Fresh, &mut Silent, &comm).map(|_| comm.rank())))
            .collect();
        for h in handles {
            h.join().unwrap().unwrap();
        }
    });
}

fn params(path: &Path) -> Vec<f32> {
    recurrent::train::RunState::load(path).unwrap().0.params
}

/// max |a - b| / max |a| over the flat parameters.
fn rel_diff(a: &[f32], b: &[f32]) -> f64 {
    let scale = a.iter().fold(0.0f64, |m, v| m.max(v.abs() as f64));
    a.iter().zip(b).fold(0.0f64, |m, (x, y)| m.max((*x as f64 - *y as f64).abs())) / scale
}

/// The largest difference between 1 process and 2 and 3 thread ranks.
fn compare(mut cfg: TrainConfig) -> f64 {
    let d = tempfile::tempdir().unwrap();
    cfg.train.threads = 1;
    cfg.out = Some(d.path().join("one"));
    train(&cfg, Mode::Fresh, &mut Silent).unwrap();
    let one = params(&d.path().join("one/state.safetensors"));
    let mut worst = 0.0f64;
    for n in [2, 3] {
        let out = d.path().join(format!("n{n}"));
        cfg.out = Some(out.clone());
        train_on_threads(&cfg, n);
        let diff = rel_diff(&one, &params(&out.join("state.safetensors")));
        eprintln!("1 process vs {n} thread ranks: relative difference {diff:e}");
        worst = worst.max(diff);
        // Only rank 0 wrote files, the same set as one process.
        let names = |p: &Path| {
            let mut v: Vec<_> = std::fs::read_dir(p).unwrap().map(|e| e.unwrap().file_name()).collect();
            v.sort();
            v
        };
        assert_eq!(names(&out), names(&d.path().join("one")));
    }
    worst
}

#[test]
fn thread_ranks_match_one_process_on_a_forecast() {
    // Batch 10: 5 + 5 on 2 ranks, 4 + 3 + 3 on 3.
    let mut cfg = TrainConfig::default();
    cfg.data.length = 300;
    cfg.model.cell = recurrent::CellKind::Gru;
    cfg.model.layers = 2;
    cfg.model.hidden = 8;
    cfg.train.batch = 10;
    cfg.train.epochs = 1;
    cfg.train.max_steps = 5;
    let d = compare(cfg);
    assert!(d < 1e-5, "relative difference {d:e}");
}

#[test]
fn thread_ranks_match_one_process_on_every_step_targets_with_ignored_steps() {
    // Copy task: a class at every step, most steps ignored; batch 5 (3 + 2, 2 + 2 + 1)
    // and truncated BPTT windows that score different numbers of targets per rank.
    let mut cfg = TrainConfig { task: Task::Copy, ..Default::default() };
    cfg.data.length = 4;
    cfg.data.delay = 3;
    cfg.data.samples = 60;
    cfg.model.hidden = 8;
    cfg.train.batch = 5;
    cfg.train.epochs = 1;
    cfg.train.max_steps = 4;
    cfg.train.estimator = recurrent::grad::Estimator::Tbptt;
    cfg.train.k1 = 3;
    cfg.train.k2 = 5;
    let d = compare(cfg);
    assert!(d < 1e-5, "relative difference {d:e}");
}

#[test]
fn f64_shards_sum_to_the_whole_batch_gradient() {
    let one = f64_parallel::train_f64(&recurrent::distributed::Single);
    for n in [2, 3] {
        let many: Vec<Vec<f64>> = std::thread::scope(|s| {
            let hs: Vec<_> =
                ThreadComm::group(n).into_iter().map(|c| s.spawn(move || f64_parallel::train_f64(&c))).collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for p in &many {
            let d = f64_parallel::rel_diff(&one, p);
            eprintln!("f64, 1 vs {n} thread ranks: relative difference {d:e}");
            assert!(d < 1e-12, "{n} ranks: relative difference {d:e}");
        }
    }
}

#[test]
fn parameter_counts_in_the_docs_are_the_models() {
    // docs/performance.md: communication per step = 4 bytes x (parameters + 2) for configurations S, M, L
    // (../shared/bench/configs.json: Linear head of 10 outputs on the last step).
    use recurrent::{CellKind, HeadKind, LossKind, Model, ModelConfig, RnnConfig};
    let table = [
        ((32, 128, 1), [22_026, 84_234, 63_498]),
        ((64, 256, 2), [216_586, 858_634, 644_618]),
        ((256, 1024, 1), [1_323_018, 5_261_322, 3_948_554]),
    ];
    for ((input, hidden, layers), counts) in table {
        for (cell, want) in [CellKind::RnnTanh, CellKind::Lstm, CellKind::Gru].into_iter().zip(counts) {
            let rnn = RnnConfig { num_layers: layers, ..RnnConfig::new(cell, input, hidden) };
            let cfg = ModelConfig { rnn, vocab: None, head: HeadKind::Last, out_size: 10, loss: LossKind::Mse };
            assert_eq!(Model::<f32>::zeros(cfg).unwrap().num_params(), want, "{cell:?} {input} {hidden} {layers}");
        }
    }
}

#[test]
fn ranks_without_examples_still_take_part() {
    // Batch 1: on 2 and 3 ranks, all but one rank have nothing in every batch (and in most of
    // the validation); they add zero gradients but join every exchange.
    let mut cfg = TrainConfig::default();
    cfg.data.length = 200;
    cfg.model.hidden = 6;
    cfg.train.batch = 1;
    cfg.train.epochs = 1;
    cfg.train.max_steps = 4;
    let d = compare(cfg);
    assert!(d < 1e-5, "relative difference {d:e}");

    // Two parallel character streams on 3 ranks: rank 2 carries none.
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("text.txt");
    std::fs::write(&text, "to be or not to be, that is the question. ".repeat(40)).unwrap();
    let mut cfg = TrainConfig { task: Task::Charlm, ..Default::default() };
    cfg.data.path = Some(text);
    cfg.model.hidden = 8;
    cfg.train.batch = 2;
    cfg.train.k1 = 10;
    cfg.train.k2 = 10;
    cfg.train.epochs = 1;
    cfg.train.max_steps = 5;
    let d = compare(cfg);
    assert!(d < 1e-5, "relative difference {d:e}");
}
