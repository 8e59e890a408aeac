//! An observer can stop the Trainer between two steps (`Observer::after_step`,
//! what the Python binding's Ctrl-C uses): the error comes back from `fit`,
//! and the model holds the parameters of the last completed step, the same
//! as a run given that many steps as its budget.

use rand::SeedableRng;
use recurrent::train::{Examples, Observer, StepInfo, TargetSet, TrainData, Trainer, TrainerConfig};
use recurrent::{CellKind, Error, HeadKind, InitConfig, LossKind, Model, ModelConfig, RnnConfig};

struct StopAfter {
    steps: u64,
    seen: u64,
}

impl Observer for StopAfter {
    fn step(&mut self, s: &StepInfo) {
        self.seen = s.step;
    }
    fn after_step(&mut self) -> recurrent::Result<()> {
        if self.seen >= self.steps {
            return Err(Error::Config {
                what: "fit".into(),
                value: "stopped".into(),
                reason: "by the observer".into(),
            });
        }
        Ok(())
    }
}

fn setup(max_steps: Option<u64>) -> (Trainer, Examples) {
    let (n, t, i) = (32, 6, 2);
    let x: Vec<f32> = (0..n * t * i).map(|k| ((k * 7919) % 101) as f32 / 101.0).collect();
    let rows = (0..n).map(|r| vec![x[r * t * i]]).collect();
    let data = Examples::from_arrays(&x, [n, t, i], None, TargetSet::Real { width: 1, rows }).unwrap();
    let cfg = ModelConfig {
        rnn: RnnConfig::new(CellKind::Gru, i, 8),
        vocab: None,
        head: HeadKind::Last,
        out_size: 1,
        loss: LossKind::Mse,
    };
    let model = Model::<f32>::new(cfg, &InitConfig::default(), &mut rand_chacha::ChaCha8Rng::seed_from_u64(0)).unwrap();
    let settings = TrainerConfig { epochs: 3, batch: 4, max_steps, threads: 1, ..TrainerConfig::default() };
    (Trainer::new(model, settings).unwrap(), data)
}

#[test]
fn an_observer_error_after_a_step_stops_the_run_at_that_step() {
    let (mut trainer, data) = setup(None);
    let before = trainer.model().params.clone();
    let mut obs = StopAfter { steps: 5, seen: 0 };
    let err = trainer.fit(TrainData::Examples(&data), TrainData::Examples(&data), &mut obs).unwrap_err();
    assert!(err.to_string().contains("by the observer"), "{err}");
    assert_eq!(obs.seen, 5);
    assert_ne!(trainer.model().params, before);

    // The same parameters as a run whose budget is those 5 steps.
    let (mut budget, data) = setup(Some(5));
    budget.fit(TrainData::Examples(&data), TrainData::Examples(&data), &mut recurrent::train::Silent).unwrap();
    assert_eq!(trainer.model().params, budget.model().params);
}
