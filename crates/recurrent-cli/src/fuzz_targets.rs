//! Every reader and parser of untrusted input as one fuzz target each,
//! shared by the cargo-fuzz harness (`fuzz/`) and the deterministic
//! mutation test (`tests/mutation.rs`): CSV for forecasting,
//! classification and tokens, UCR `.ts`, IDX (plain and gzip), text,
//! safetensors checkpoints with their metadata, and the TOML configuration.
//!
//! A target writes the input to a file (the readers take paths), reads it,
//! and checks the rules of issue 18 on any error: one line, at most 300
//! characters, no control characters. A panic is left to propagate so that
//! the fuzzer (or `catch_unwind` in the test) sees it.

use crate::train::{usage, TrainConfig};
use recurrent::error::MAX_LINE_CHARS;
use recurrent_data::{self as data, CsvOptions, TokenSplit};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The fuzz targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    CsvForecast,
    CsvClassify,
    CsvTokens,
    Ts,
    Idx,
    IdxGz,
    Text,
    Checkpoint,
    Toml,
}

impl Target {
    /// All targets.
    pub const ALL: [Target; 9] = [
        Target::CsvForecast,
        Target::CsvClassify,
        Target::CsvTokens,
        Target::Ts,
        Target::Idx,
        Target::IdxGz,
        Target::Text,
        Target::Checkpoint,
        Target::Toml,
    ];

    /// The target's name (the cargo-fuzz target and corpus folder).
    pub fn name(self) -> &'static str {
        match self {
            Target::CsvForecast => "csv_forecast",
            Target::CsvClassify => "csv_classify",
            Target::CsvTokens => "csv_tokens",
            Target::Ts => "ts",
            Target::Idx => "idx",
            Target::IdxGz => "idx_gz",
            Target::Text => "text",
            Target::Checkpoint => "checkpoint",
            Target::Toml => "toml",
        }
    }

    /// File name the input is written to (the extension matters to the
    /// token reader's delimiter choice only).
    fn file_name(self) -> &'static str {
        match self {
            Target::CsvForecast | Target::CsvClassify | Target::CsvTokens => "in.csv",
            Target::Ts => "in.ts",
            Target::Idx | Target::IdxGz => "in.idx",
            Target::Text => "in.txt",
            Target::Checkpoint => "in.safetensors",
            Target::Toml => "config.toml",
        }
    }
}

/// A folder for the inputs of one fuzzing process (under /dev/shm when it
/// exists, so that writing the input costs no disk I/O).
pub fn scratch_dir() -> PathBuf {
    let base = if Path::new("/dev/shm").is_dir() { PathBuf::from("/dev/shm") } else { std::env::temp_dir() };
    let dir = base.join(format!("recurrent-fuzz-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    dir
}

/// Checks one error message against the rules; `Err` describes a breach.
pub fn check_message(msg: &str) -> Result<(), String> {
    if msg.contains('\n') {
        return Err(format!("error of more than one line: {msg:?}"));
    }
    if msg.chars().count() > MAX_LINE_CHARS {
        return Err(format!("error of {} characters: {msg:?}", msg.chars().count()));
    }
    if msg.chars().any(char::is_control) {
        return Err(format!("control character in error: {msg:?}"));
    }
    Ok(())
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).expect("in memory");
    e.finish().expect("in memory")
}

/// Runs `target` on `input` in `dir`. `Ok` when the input was read or
/// refused with a well-formed error; `Err` names a breach of the rules.
/// Panics are not caught here.
pub fn run(target: Target, input: &[u8], dir: &Path) -> Result<(), String> {
    let path = dir.join(target.file_name());
    let bytes = if target == Target::IdxGz { gzip(input) } else { input.to_vec() };
    std::fs::write(&path, &bytes).map_err(|e| format!("cannot write the input: {e}"))?;
    let result: recurrent::Result<()> = match target {
        Target::CsvForecast => {
            let plain = data::read_table(&path, &CsvOptions::default()).map(|_| ());
            let dated =
                data::read_table(&path, &CsvOptions { header: None, delimiter: b',', date_column: Some("0".into()) })
                    .map(|_| ());
            if let Err(e) = &dated {
                check_message(&e.to_string())?;
            }
            plain
        }
        Target::CsvClassify => data::read_labeled_rows(&path, None, b',', "-1").map(|_| ()),
        Target::CsvTokens => {
            let words = data::read_token_examples(&path, None, None, "0", "1", TokenSplit::Whitespace).map(|_| ());
            if let Err(e) = &words {
                check_message(&e.to_string())?;
            }
            data::read_token_examples(&path, None, None, "0", "1", TokenSplit::Chars).map(|_| ())
        }
        Target::Ts => data::read_ts(&path).map(|_| ()),
        Target::Idx | Target::IdxGz => data::read_idx(&path).and_then(|images| {
            // The MNIST reading of any 3-dimensional array.
            if images.dims.len() == 3 {
                // Labels for as many images as the data can hold (a header may claim
                // more with an empty image size, which mnist_shape refuses).
                let n = images.dims[0].min(images.data.len());
                let labels = data::Idx { dims: vec![n], data: vec![0; n] };
                data::mnist_sequences(&images, &labels, false).map(|_| ())
            } else {
                Ok(())
            }
        }),
        Target::Text => data::read_text(&path).map(|_| ()),
        Target::Checkpoint => usage::load(&path).map(|_| ()),
        Target::Toml => {
            let text = String::from_utf8_lossy(input);
            match TrainConfig::from_toml(&text, &path.display().to_string()) {
                Ok(cfg) => cfg.validate(),
                Err(e) => Err(e),
            }
        }
    };
    match result {
        Ok(()) => then_use(target, &path, dir),
        Err(e) => check_message(&e.to_string()),
    }
}

/// After a reader accepted the input: what the command line does with it
/// next (prepare the task's examples; or, for a checkpoint, evaluate and
/// predict on a small series), with the same rules on errors.
fn then_use(target: Target, path: &Path, dir: &Path) -> Result<(), String> {
    let task = match target {
        Target::CsvForecast => "forecast",
        Target::CsvClassify => "classify",
        Target::CsvTokens => "tokens",
        Target::Ts => "ts",
        Target::Text => "charlm",
        Target::Checkpoint => {
            let Ok(l) = usage::load(path) else { return Ok(()) };
            let series = dir.join("series.csv");
            let rows: String = (0..40).map(|i| format!("{},{}\n", i % 7, i % 5)).collect();
            std::fs::write(&series, format!("a,b\n{rows}")).map_err(|e| format!("cannot write: {e}"))?;
            if let Err(e) = usage::eval(&l, &series, 8) {
                check_message(&e.to_string())?;
            }
            if let Err(e) = usage::predict(&l, &series, 8) {
                check_message(&e.to_string())?;
            }
            return Ok(());
        }
        Target::Idx | Target::IdxGz | Target::Toml => return Ok(()),
    };
    let mut cfg = TrainConfig { task: task.into(), ..TrainConfig::default() };
    cfg.data.path = Some(path.to_path_buf());
    cfg.data.window = 2;
    cfg.data.horizon = 1;
    cfg.train.batch = 2;
    if task == "classify" {
        cfg.data.label_column = "-1".into();
    }
    match crate::train::task::prepare(&cfg) {
        Ok(_) => Ok(()),
        Err(e) => check_message(&e.to_string()),
    }
}

/// Small valid inputs of `target`: the seed corpus.
pub fn seeds(target: Target) -> Vec<Vec<u8>> {
    let s = |t: &str| t.as_bytes().to_vec();
    match target {
        Target::CsvForecast => vec![
            s("date,load,temp\n2020-01-01 00:00,1.5,3\n2020-01-01 01:00,2.5,4\n2020-01-01 02:00,3,5\n"),
            s("1,2\n3,4\n5,6\n"),
            s("\u{feff}\"Month\",\"Passengers\"\r\n\"1949-01\",112\r\n\"1949-02\",118\r\n"),
        ],
        Target::CsvClassify => vec![s("a,b,c,label\n1,2,3,x\n4,5,6,y\n"), s("1,2,0\n3,4,1\n")],
        Target::CsvTokens => vec![
            s("label,text\npos,good movie\nneg,\"bad, really\"\n"),
            s("1,ACGT\n0,TTA\n"),
        ],
        Target::Ts => vec![
            s("#c\n@problemName x\n@univariate true\n@classLabel true a b\n@data\n1,2,3:a\n4,5,6:b\n"),
            s("@dimensions 2\n@equalLength true\n@seriesLength 2\n@classLabel true 1 2\n@data\n1,2:3,4:1\n5,6:7,8:2\n"),
            s("@targetLabel true\n@data\n1,2:0.5\n"),
            s("@classLabel false\n@data\n1,2,3\n4,5,6\n7,8,9\n1,3,5\n2,4,6\n"),
        ],
        Target::Idx | Target::IdxGz => {
            let mut images = vec![0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 2];
            images.extend(0..12u8);
            vec![images, vec![0, 0, 8, 1, 0, 0, 0, 3, 7, 1, 9]]
        }
        Target::Text => vec![s("To be, or not to be\nthat is the question.\n"), s("\u{feff}héllo wörld\n")],
        Target::Checkpoint => vec![checkpoint_seed()],
        Target::Toml => vec![
            s("task = \"forecast\"\nseed = 3\n[data]\npath = \"x.csv\"\nwindow = 12\n[model]\ncell = \"gru\"\nhidden = 8\n[train]\nepochs = 2\n"),
            s("task = \"adding\"\n"),
        ],
    }
}

/// A small forecasting checkpoint as `train` writes it.
fn checkpoint_seed() -> Vec<u8> {
    use rand::SeedableRng;
    use recurrent::{CellKind, HeadKind, InitConfig, LossKind, Model, ModelConfig, RnnConfig};
    let cfg = ModelConfig {
        rnn: RnnConfig::new(CellKind::Lstm, 1, 2),
        vocab: None,
        head: HeadKind::Last,
        out_size: 1,
        loss: LossKind::Mse,
    };
    let model = Model::<f32>::new(cfg, &InitConfig::default(), &mut rand_chacha::ChaCha8Rng::seed_from_u64(1))
        .expect("valid model");
    let norm = crate::train::task::Norm { mean: vec![0.5], std: vec![2.0] };
    let meta = crate::train::task::TaskMeta {
        task: "forecast".into(),
        data: TrainConfig::default().data,
        input_columns: vec!["a".into()],
        target_columns: vec!["a".into()],
        input_norm: Some(norm.clone()),
        target_norm: Some(norm),
        classes: Vec::new(),
        vocab: None,
        channel_norm: None,
        image_shape: None,
    };
    let dir = scratch_dir();
    let path = dir.join("seed.safetensors");
    recurrent::checkpoint::save(&path, &model, serde_json::to_value(&meta).expect("serialisable"))
        .expect("writable scratch folder");
    let bytes = std::fs::read(&path).expect("just written");
    let _ = std::fs::remove_file(&path);
    bytes
}
