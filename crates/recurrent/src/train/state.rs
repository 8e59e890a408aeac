//! The Trainer's whole resumable state as one value, saved and restored as
//! one file: parameters, optimizer slots, schedule, RNG position, counters
//! and the best model so far.
//!
//! File: safetensors with f32 tensors `params` [P], `best` [P] (once a
//! validation loss was finite) and `optimizer.slotNN` [P] (two digits);
//! one metadata key, `recurrent.run`, holding the JSON of [`RunMeta`] with
//! the model's checkpoint metadata under `checkpoint`. Written atomically,
//! so a file on disk is always one whole state.

use crate::checkpoint::{parse_tensors, serialize_tensors, write_atomic, CheckpointMeta, NamedTensors};
use crate::error::{data_err, Result};
use crate::model::ModelConfig;
use crate::optim::Scheduler;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

/// Metadata key of the run's counters.
pub const RUN_KEY: &str = "recurrent.run";
/// Value of `format` in the run metadata.
pub const RUN_FORMAT: &str = "recurrent-run-state";

/// Where training stands, besides the tensors.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Counters {
    /// Epochs completed.
    pub epoch: usize,
    /// Optimizer steps taken.
    pub step: u64,
    /// Best validation loss so far (None before the first finite one).
    pub best_val: Option<f64>,
    /// Epochs since the best validation loss.
    pub bad_epochs: usize,
    /// Validations reported so far (lines of a metrics file).
    pub validations: usize,
    /// Whether early stopping or the goal ended the run.
    pub stopped_early: bool,
}

/// A position of the training RNG (ChaCha8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RngPosition {
    /// Seed it was created from.
    pub seed: u64,
    /// Its stream.
    pub stream: u64,
    /// Words consumed.
    pub word_pos: u128,
}

impl RngPosition {
    /// The position of `rng`, created from `seed`.
    pub fn of(seed: u64, rng: &ChaCha8Rng) -> Self {
        RngPosition { seed, stream: rng.get_stream(), word_pos: rng.get_word_pos() }
    }

    /// The RNG at this position.
    pub fn rng(&self) -> ChaCha8Rng {
        let mut r = ChaCha8Rng::seed_from_u64(self.seed);
        r.set_stream(self.stream);
        r.set_word_pos(self.word_pos);
        r
    }
}

/// Everything a resumed run continues from.
#[derive(Clone, Debug, PartialEq)]
pub struct RunState {
    /// The model's flat parameters [P] after the last completed epoch.
    pub params: Vec<f32>,
    /// The optimizer's state buffers, each [P].
    pub slots: Vec<Vec<f32>>,
    /// The optimizer's step count.
    pub optimizer_step: u64,
    /// The optimizer's current learning rate.
    pub optimizer_lr: f64,
    /// The schedule with its running state.
    pub scheduler: Scheduler,
    /// The training RNG.
    pub rng: RngPosition,
    /// Epochs, steps, best loss, patience.
    pub counters: Counters,
    /// Parameters [P] of the model with the best validation loss so far.
    pub best: Option<Vec<f32>>,
}

/// The JSON under `recurrent.run`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunMeta {
    /// Always `recurrent-run-state`.
    pub format: String,
    /// Schema version (1).
    pub version: u32,
    /// Counters.
    pub counters: Counters,
    /// Optimizer step count.
    pub optimizer_step: u64,
    /// Optimizer learning rate.
    pub optimizer_lr: f64,
    /// Schedule state.
    pub scheduler: Scheduler,
    /// RNG seed.
    pub rng_seed: u64,
    /// RNG stream.
    pub rng_stream: u64,
    /// RNG word position (decimal: a u128).
    pub rng_word_pos: String,
    /// The model's configuration and task, as a checkpoint's metadata holds them
    /// (absent in the bytes sent between processes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<CheckpointMeta>,
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Tensors to serialise: (name, shape, little-endian f32 bytes).
type RawTensors = Vec<(String, Vec<usize>, Vec<u8>)>;

impl RunState {
    /// The tensors and the run metadata.
    fn parts(&self) -> (RawTensors, RunMeta) {
        let p = self.params.len();
        let mut tensors = vec![("params".to_string(), vec![p], f32_bytes(&self.params))];
        if let Some(b) = &self.best {
            tensors.push(("best".into(), vec![p], f32_bytes(b)));
        }
        for (k, s) in self.slots.iter().enumerate() {
            tensors.push((format!("optimizer.slot{k:02}"), vec![p], f32_bytes(s)));
        }
        let run = RunMeta {
            format: RUN_FORMAT.into(),
            version: 1,
            counters: self.counters.clone(),
            optimizer_step: self.optimizer_step,
            optimizer_lr: self.optimizer_lr,
            scheduler: self.scheduler.clone(),
            rng_seed: self.rng.seed,
            rng_stream: self.rng.stream,
            rng_word_pos: self.rng.word_pos.to_string(),
            checkpoint: None,
        };
        (tensors, run)
    }

    /// The state as safetensors bytes without a model description (to send
    /// it to the other processes of a run).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let (tensors, run) = self.parts();
        let json = |v: &dyn erased::Json| v.json().map_err(|e| data_err("<run state>", None, e.to_string()));
        serialize_tensors(&tensors, HashMap::from([(RUN_KEY.to_string(), json(&run)?)]))
    }

    /// Writes the state (with the model's configuration and a task description) to `path`, atomically.
    pub fn save(&self, path: &Path, model: &ModelConfig, task: serde_json::Value) -> Result<()> {
        let (tensors, mut run) = self.parts();
        run.checkpoint = Some(CheckpointMeta::new(model, task));
        // One metadata key, so the file's bytes do not depend on a map's order.
        let json = serde_json::to_string(&run).map_err(|e| data_err(path, None, e.to_string()))?;
        write_atomic(path, &serialize_tensors(&tensors, HashMap::from([(RUN_KEY.to_string(), json)]))?)
    }

    /// Reads a state written by `save`, with the model metadata it was saved with.
    pub fn load(path: &Path) -> Result<(RunState, CheckpointMeta)> {
        let bytes = std::fs::read(path).map_err(|e| data_err(path, None, format!("cannot read: {e}")))?;
        let (tensors, meta) = parse_tensors(&bytes, path)?;
        let (state, model) = Self::from_parts(tensors, &meta, path)?;
        let model = model.ok_or_else(|| data_err(path, None, "the run state names no model configuration"))?;
        Ok((state, model))
    }

    /// Reads a state from `to_bytes` or `save` bytes (`path` names them in errors).
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<RunState> {
        let (tensors, meta) = parse_tensors(bytes, path)?;
        Self::from_parts(tensors, &meta, path).map(|(s, _)| s)
    }

    fn from_parts(
        tensors: NamedTensors,
        meta: &HashMap<String, String>,
        path: &Path,
    ) -> Result<(RunState, Option<CheckpointMeta>)> {
        let json = meta
            .get(RUN_KEY)
            .ok_or_else(|| data_err(path, None, format!("not a run state: no \"{RUN_KEY}\" metadata")))?;
        let run: RunMeta = serde_json::from_str(json)
            .map_err(|e| data_err(path, None, format!("metadata \"{RUN_KEY}\" is not valid: {e}")))?;
        if run.format != RUN_FORMAT || run.version != 1 {
            return Err(data_err(
                path,
                None,
                format!("format is \"{}\" version {}, expected \"{RUN_FORMAT}\" version 1", run.format, run.version),
            ));
        }
        let word_pos =
            run.rng_word_pos.parse().map_err(|_| data_err(path, None, "rng_word_pos is not a whole number"))?;
        let mut params = None;
        let mut best = None;
        let mut slots = Vec::new();
        for (name, _, v) in tensors {
            let v: Vec<f32> = v.into_iter().map(|x| x as f32).collect();
            match name.as_str() {
                "params" => params = Some(v),
                "best" => best = Some(v),
                // Sorted by name, and numbered with two digits: slot00 < slot01 < ...
                n if n.starts_with("optimizer.slot") => slots.push(v),
                other => return Err(data_err(path, None, format!("unexpected tensor {other}"))),
            }
        }
        let params = params.ok_or_else(|| data_err(path, None, "no tensor \"params\""))?;
        if best.iter().chain(&slots).any(|v| v.len() != params.len()) {
            return Err(data_err(path, None, "tensors of different sizes"));
        }
        let state = RunState {
            params,
            slots,
            optimizer_step: run.optimizer_step,
            optimizer_lr: run.optimizer_lr,
            scheduler: run.scheduler,
            rng: RngPosition { seed: run.rng_seed, stream: run.rng_stream, word_pos },
            counters: run.counters,
            best,
        };
        Ok((state, run.checkpoint))
    }
}

/// Serialising either metadata value through one closure.
mod erased {
    /// A value that serialises to JSON text.
    pub trait Json {
        /// Its JSON.
        fn json(&self) -> serde_json::Result<String>;
    }
    impl<T: serde::Serialize> Json for T {
        fn json(&self) -> serde_json::Result<String> {
            serde_json::to_string(self)
        }
    }
}
