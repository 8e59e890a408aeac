//! Optimizers, clipping and schedules against PyTorch (fixtures from
//! tools/make_fixtures.py): parameters after each of 3 steps to 1e-10
//! relative in f64, and the learning rate of every epoch.

mod common;
use common::rel_err;
use recurrent::optim::{clip_grad_norm, clip_grad_value, Optimizer, OptimizerKind, Schedule, Scheduler};
use serde_json::Value;

fn load(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn data(v: &Value) -> Vec<f64> {
    v["data"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

fn kind(c: &Value) -> OptimizerKind {
    let h = &c["hparams"];
    let f = |k: &str| h[k].as_f64().unwrap_or_else(|| panic!("{}: {k}", c["name"]));
    let b = |k: &str| h[k].as_bool().unwrap();
    match c["optimizer"].as_str().unwrap() {
        "sgd" => OptimizerKind::Sgd {
            lr: f("lr"),
            momentum: f("momentum"),
            dampening: f("dampening"),
            nesterov: b("nesterov"),
            weight_decay: f("weight_decay"),
        },
        "rmsprop" => OptimizerKind::Rmsprop {
            lr: f("lr"),
            alpha: f("alpha"),
            eps: f("eps"),
            weight_decay: f("weight_decay"),
            momentum: f("momentum"),
            centered: b("centered"),
        },
        "adagrad" => OptimizerKind::Adagrad {
            lr: f("lr"),
            lr_decay: f("lr_decay"),
            weight_decay: f("weight_decay"),
            initial_accumulator_value: f("initial_accumulator_value"),
            eps: f("eps"),
        },
        "adam" => OptimizerKind::Adam {
            lr: f("lr"),
            beta1: f("beta1"),
            beta2: f("beta2"),
            eps: f("eps"),
            weight_decay: f("weight_decay"),
            amsgrad: b("amsgrad"),
        },
        "adamw" => OptimizerKind::Adamw {
            lr: f("lr"),
            beta1: f("beta1"),
            beta2: f("beta2"),
            eps: f("eps"),
            weight_decay: f("weight_decay"),
            amsgrad: b("amsgrad"),
        },
        o => panic!("unknown optimizer {o}"),
    }
}

#[test]
fn optimizers_match_pytorch_for_three_steps() {
    let fx = load("torch_optim.json");
    let cases = fx["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 12);
    for c in cases {
        let mut p = data(&c["p0"]);
        let mut opt = Optimizer::<f64>::new(kind(c), p.len()).unwrap();
        for (k, (g, want)) in c["grads"].as_array().unwrap().iter().zip(c["params"].as_array().unwrap()).enumerate() {
            opt.step(&mut p, &data(g)).unwrap();
            for (a, b) in p.iter().zip(data(want)) {
                assert!(rel_err(*a, b) < 1e-10, "{} step {}: {a} vs {b}", c["name"], k + 1);
            }
        }
    }
}

#[test]
fn clipping_matches_pytorch() {
    let fx = load("torch_optim.json");
    for c in fx["clip"].as_array().unwrap() {
        let grads: Vec<Vec<f64>> = c["grads"].as_array().unwrap().iter().map(data).collect();
        let mut flat: Vec<f64> = grads.concat();
        let norm = clip_grad_norm(&mut flat, c["max_norm"].as_f64().unwrap());
        assert!(rel_err(norm, c["total_norm"].as_f64().unwrap()) < 1e-12);
        let want: Vec<f64> = c["clipped"].as_array().unwrap().iter().map(data).collect::<Vec<_>>().concat();
        for (a, b) in flat.iter().zip(&want) {
            assert!(rel_err(*a, *b) < 1e-12, "{a} vs {b}");
        }
    }
    for c in fx["clip_value"].as_array().unwrap() {
        let mut flat: Vec<f64> = c["grads"].as_array().unwrap().iter().map(data).collect::<Vec<_>>().concat();
        let n = clip_grad_value(&mut flat, c["clip_value"].as_f64().unwrap());
        assert!(n > 0);
        let want: Vec<f64> = c["clipped"].as_array().unwrap().iter().map(data).collect::<Vec<_>>().concat();
        assert_eq!(flat, want);
    }
}

#[test]
fn schedules_match_pytorch() {
    let fx = load("torch_sched.json");
    for c in fx["cases"].as_array().unwrap() {
        let h = &c["hparams"];
        let f = |k: &str| h[k].as_f64().unwrap();
        let u = |k: &str| h[k].as_u64().unwrap() as usize;
        let schedule = match c["kind"].as_str().unwrap() {
            "step" => Schedule::Step { step_size: u("step_size"), gamma: f("gamma") },
            "exponential" => Schedule::Exponential { gamma: f("gamma") },
            "cosine_warmup" => Schedule::CosineWarmup {
                warmup_epochs: u("warmup_epochs"),
                start_factor: f("start_factor"),
                total_epochs: u("total_epochs"),
                eta_min: f("eta_min"),
            },
            "plateau" => {
                assert_eq!(h["mode"], "min");
                assert_eq!(h["threshold_mode"], "rel");
                Schedule::Plateau {
                    factor: f("factor"),
                    patience: u("patience"),
                    threshold: f("threshold"),
                    cooldown: u("cooldown"),
                    min_lr: f("min_lr"),
                }
            }
            k => panic!("unknown schedule {k}"),
        };
        let mut s = Scheduler::new(schedule, c["base_lr"].as_f64().unwrap()).unwrap();
        let metrics: Vec<f64> =
            c["metrics"].as_array().map(|a| a.iter().map(|v| v.as_f64().unwrap()).collect()).unwrap_or_default();
        for (e, want) in c["lrs"].as_array().unwrap().iter().enumerate() {
            let want = want.as_f64().unwrap();
            assert!(rel_err(s.lr, want) < 1e-10, "{} epoch {e}: {} vs {want}", c["name"], s.lr);
            s.step(metrics.get(e).copied());
        }
    }
}

#[test]
fn bad_hyperparameters_are_typed_errors() {
    assert!(OptimizerKind::default_for("lbfgs", 0.1).is_err());
    let bad = OptimizerKind::Adam { lr: 1e-3, beta1: 1.0, beta2: 0.999, eps: 1e-8, weight_decay: 0.0, amsgrad: false };
    assert!(Optimizer::<f64>::new(bad, 3).is_err());
    let nest = OptimizerKind::Sgd { lr: 0.1, momentum: 0.0, dampening: 0.0, nesterov: true, weight_decay: 0.0 };
    assert!(Optimizer::<f64>::new(nest, 3).is_err());
    let mut o = Optimizer::<f64>::new(OptimizerKind::default_for("sgd", 0.1).unwrap(), 3).unwrap();
    assert!(o.step(&mut [0.0; 2], &[0.0; 3]).is_err());
    assert!(Scheduler::new(Schedule::Step { step_size: 0, gamma: 0.5 }, 0.1).is_err());
    assert!(Scheduler::new(
        Schedule::CosineWarmup { warmup_epochs: 5, start_factor: 0.1, total_epochs: 5, eta_min: 0.0 },
        0.1
    )
    .is_err());
}
