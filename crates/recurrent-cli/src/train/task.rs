//! Turns a task and its data into examples the trainer batches: forecasting
//! windows, labelled sequences, token sequences, a character stream, or a
//! synthetic task. Everything fitted to data (normalisation, vocabulary,
//! class labels) is fitted on the training part only and returned in
//! `TaskMeta`, which the checkpoint stores so `eval`/`predict`/`generate`
//! reuse it.

use super::config::{Task, TrainConfig};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use recurrent::error::{config_err, data_err, Result};
use recurrent::loss::LossKind;
use recurrent::model::HeadKind;
use recurrent::train::Metric;
use recurrent_data::{self as data, CsvOptions, Vocab};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub use recurrent::train::{DataSource, Examples, Inputs, TargetSet};

/// The data of a task, split.
#[derive(Clone, Debug)]
pub enum TaskData {
    /// Independent examples, batched and shuffled.
    Examples { train: Examples, val: Examples, test: Examples },
    /// One token stream each (character LM), cut into `batch` parallel streams.
    Stream { train: Vec<usize>, val: Vec<usize>, test: Vec<usize> },
}

/// Per-column normalisation (z-score), fitted on the training part.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Norm {
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
}

impl Norm {
    /// Fits mean and standard deviation of each column on `rows` [n][c].
    fn fit(cols: &[&[f64]]) -> Norm {
        let mut mean = Vec::new();
        let mut std = Vec::new();
        for c in cols {
            let n = c.len().max(1) as f64;
            let m = c.iter().sum::<f64>() / n;
            let v = c.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / n;
            mean.push(m);
            // A constant column keeps unit scale rather than dividing by zero.
            std.push(if v > 1e-24 { v.sqrt() } else { 1.0 });
        }
        Norm { mean, std }
    }
}

/// What the trained model needs to read new data and speak its outputs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskMeta {
    /// The task name (see `TASKS`).
    pub task: String,
    /// The data options the model was trained with (columns, window, horizon...).
    pub data: super::config::DataConfig,
    /// Forecasting: input column names, in order.
    #[serde(default)]
    pub input_columns: Vec<String>,
    /// Forecasting: target column names, in order.
    #[serde(default)]
    pub target_columns: Vec<String>,
    /// Forecasting: normalisation of the input columns and of the targets.
    #[serde(default)]
    pub input_norm: Option<Norm>,
    #[serde(default)]
    pub target_norm: Option<Norm>,
    /// Classification: class names, index = class id.
    #[serde(default)]
    pub classes: Vec<String>,
    /// Token tasks: vocabulary, index = token id.
    #[serde(default)]
    pub vocab: Option<Vocab>,
    /// Sequence classification: per-channel normalisation.
    #[serde(default)]
    pub channel_norm: Option<Norm>,
    /// MNIST: the (rows, columns) of the training images, so that images of
    /// another size are refused by `eval` and `predict`.
    #[serde(default)]
    pub image_shape: Option<(usize, usize)>,
}

/// Model shape implied by the task.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskShape {
    pub input_size: usize,
    pub vocab: Option<usize>,
    pub head: HeadKind,
    pub out_size: usize,
    pub loss: LossKind,
}

/// The task's data, its model shape and its metadata; plus a baseline to beat.
#[derive(Clone, Debug)]
pub struct Prepared {
    pub data: TaskData,
    pub shape: TaskShape,
    pub meta: TaskMeta,
    /// A naive baseline's validation metric, with its description.
    pub baseline: Option<(String, f64)>,
    /// The same baseline on the test part.
    pub test_baseline: Option<(String, f64)>,
}

fn need_path(cfg: &TrainConfig) -> Result<&Path> {
    cfg.data
        .path
        .as_deref()
        .ok_or_else(|| config_err("data.path", "missing", format!("task {} reads a file: give --data PATH", cfg.task)))
}

/// Splits n items into (train, val, test) counts by fractions; each part keeps at least one item.
fn split_counts(n: usize, val: f64, test: f64, what: &str) -> Result<(usize, usize, usize)> {
    let nv = ((n as f64 * val).round() as usize).max(usize::from(val > 0.0));
    let nt = ((n as f64 * test).round() as usize).max(usize::from(test > 0.0));
    if n < nv + nt + 1 || (val > 0.0 && nv == 0) {
        return Err(config_err(what, n, format!("too few to split into train/validation/test ({val} / {test})")));
    }
    Ok((n - nv - nt, nv, nt))
}

/// Checks that every real input and target of `ex` is finite after
/// normalisation (values near f64's range overflow f32 there), naming the
/// file the examples came from.
pub(crate) fn check_finite(path: &Path, ex: &Examples) -> Result<()> {
    if let Inputs::Dense { seqs, .. } = &ex.inputs {
        if let Some(i) = seqs.iter().position(|s| s.iter().any(|v| !v.is_finite())) {
            return Err(data_err(
                path,
                None,
                format!("example {}: a value is too large to normalise (it overflows f32)", i + 1),
            ));
        }
    }
    if let TargetSet::Real { rows, .. } = &ex.targets {
        if let Some(i) = rows.iter().position(|s| s.iter().any(|v| !v.is_finite())) {
            return Err(data_err(
                path,
                None,
                format!("example {}: a target is too large to normalise (it overflows f32)", i + 1),
            ));
        }
    }
    Ok(())
}

/// The metric a task's validations report, for training and for `eval`
/// alike: rmse in data units (`target_norm` undone) for forecasts, accuracy
/// for classes, bits per character for the language model, the MSE for the
/// adding problem.
pub fn metric_of(task: Task, target_norm: Option<&Norm>) -> Metric {
    match task {
        Task::Forecast | Task::MackeyGlass => {
            Metric::Rmse { scale: target_norm.map(|n| n.std.clone()).unwrap_or_default() }
        }
        Task::Classify | Task::Ts | Task::Mnist | Task::Tokens | Task::Copy => Metric::Accuracy,
        Task::Charlm => Metric::Bpc,
        Task::Adding => Metric::Mse,
    }
}

/// Prepares the data of `cfg.task`.
pub fn prepare(cfg: &TrainConfig) -> Result<Prepared> {
    if let (Some(p), false) = (&cfg.data.test_path, cfg.task == Task::Ts) {
        return Err(config_err(
            "test_path (--test-data)",
            p.display(),
            format!("only task ts reads a separate test file; task {} splits its data", cfg.task),
        ));
    }
    let prepared = prepare_task(cfg)?;
    if let (TaskData::Examples { train, val, test }, Some(path)) = (&prepared.data, cfg.data.path.as_deref()) {
        for ex in [train, val, test] {
            check_finite(path, ex)?;
        }
    }
    Ok(prepared)
}

fn prepare_task(cfg: &TrainConfig) -> Result<Prepared> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x5eed_da7a);
    match cfg.task {
        Task::Forecast => {
            let path = need_path(cfg)?;
            let opts = CsvOptions {
                header: cfg.data.header,
                delimiter: cfg.data.delimiter.as_bytes()[0],
                date_column: cfg.data.date_column.clone(),
            };
            let table = data::read_table(path, &opts)?;
            forecast(cfg, path, &table.names, &table.columns, &|name: &str| table.column_index(name))
        }
        Task::MackeyGlass => {
            let series = data::mackey_glass(cfg.data.length, cfg.data.tau, &mut rng)?;
            let names = vec!["x".to_string()];
            let cols = vec![series];
            forecast(cfg, Path::new("<mackey-glass>"), &names, &cols, &|n: &str| {
                if n == "x" || n == "0" {
                    Ok(0)
                } else {
                    Err(config_err("column", n, "the Mackey-Glass series has one column, x"))
                }
            })
        }
        Task::Classify => {
            let path = need_path(cfg)?;
            let rows = data::read_labeled_rows(
                path,
                cfg.data.header,
                cfg.data.delimiter.as_bytes()[0],
                &cfg.data.label_column,
            )?;
            let seqs: Vec<Vec<Vec<f64>>> = rows.rows.into_iter().map(|r| vec![r]).collect();
            sequences(cfg, seqs, rows.labels, None, Vec::new(), &mut rng)
        }
        Task::Ts => {
            let path = need_path(cfg)?;
            let train = data::read_ts(path)?;
            if train.labels.is_empty() {
                return Err(data_err(
                    path,
                    None,
                    "has no class labels (@classLabel false): task ts classifies, so every example needs a label",
                ));
            }
            let test_path = match &cfg.data.test_path {
                Some(p) => {
                    data::regular_file_size(p).map_err(|e| match e {
                        recurrent::Error::Data { problem, .. } => {
                            config_err("test_path (--test-data)", p.display(), problem)
                        }
                        other => other,
                    })?;
                    Some(p.clone())
                }
                None => {
                    let s = path.to_string_lossy();
                    (s.contains("_TRAIN")).then(|| PathBuf::from(s.replace("_TRAIN", "_TEST"))).filter(|p| p.exists())
                }
            };
            let test = test_path.as_deref().map(data::read_ts).transpose()?;
            if let (Some(t), Some(p)) = (&test, &test_path) {
                if t.labels.is_empty() {
                    return Err(data_err(
                        p,
                        None,
                        "has no class labels (@classLabel false): the test part needs labels",
                    ));
                }
                let (want, got) = (train.series[0].len(), t.series[0].len());
                if want != got {
                    return Err(data_err(
                        p,
                        None,
                        format!("examples have {got} channels but those of the training file {want}"),
                    ));
                }
                let known = if train.class_labels.is_empty() { &train.labels } else { &train.class_labels };
                if let Some(bad) = t.labels.iter().find(|l| !known.contains(l)) {
                    return Err(data_err(
                        p,
                        None,
                        format!("label \"{}\" does not occur in the training file", data::echo(bad)),
                    ));
                }
            }
            let classes = train.class_labels.clone();
            let test = test.map(|t| (t.series, t.labels));
            sequences(cfg, train.series, train.labels, test, classes, &mut rng)
        }
        Task::Mnist => mnist(cfg, need_path(cfg)?),
        Task::Tokens => tokens(cfg, need_path(cfg)?, &mut rng),
        Task::Charlm => charlm(cfg, need_path(cfg)?),
        Task::Adding => adding(cfg, &mut rng),
        Task::Copy => copy(cfg, &mut rng),
    }
}

/// Forecasting windows over a table of columns [c][t].
fn forecast(
    cfg: &TrainConfig,
    path: &Path,
    names: &[String],
    columns: &[Vec<f64>],
    index: &dyn Fn(&str) -> Result<usize>,
) -> Result<Prepared> {
    let d = &cfg.data;
    let inputs: Vec<usize> = if d.inputs.is_empty() {
        (0..columns.len()).collect()
    } else {
        d.inputs.iter().map(|c| index(c)).collect::<Result<_>>()?
    };
    let targets: Vec<usize> = if d.targets.is_empty() {
        inputs.clone()
    } else {
        d.targets.iter().map(|c| index(c)).collect::<Result<_>>()?
    };
    if inputs.is_empty() {
        return Err(data_err(path, None, "no numeric column to read"));
    }
    let n = columns[0].len();
    let (w, h) = (d.window, d.horizon);
    // Chronological split of the rows; each part must hold at least one window.
    let (ntr, nv, _nt) = split_counts(n, d.val_fraction, d.test_fraction, "rows")?;
    let bounds = [(0, ntr), (ntr, ntr + nv), (ntr + nv, n)];
    if w.checked_add(h).is_none_or(|s| ntr < s) {
        return Err(data_err(
            path,
            None,
            format!("window {w} + horizon {h} is longer than the training part ({ntr} of {n} rows)"),
        ));
    }
    let fit_in = Norm::fit(&inputs.iter().map(|&c| &columns[c][..ntr]).collect::<Vec<_>>());
    let fit_out = Norm::fit(&targets.iter().map(|&c| &columns[c][..ntr]).collect::<Vec<_>>());
    let windows = |lo: usize, hi: usize| -> Examples {
        let mut seqs = Vec::new();
        let mut rows = Vec::new();
        let mut s = lo;
        while s + w + h <= hi {
            let mut x = Vec::with_capacity(w * inputs.len());
            for t in s..s + w {
                for (k, &c) in inputs.iter().enumerate() {
                    x.push(((columns[c][t] - fit_in.mean[k]) / fit_in.std[k]) as f32);
                }
            }
            let mut y = Vec::with_capacity(h * targets.len());
            for t in s + w..s + w + h {
                for (k, &c) in targets.iter().enumerate() {
                    y.push(((columns[c][t] - fit_out.mean[k]) / fit_out.std[k]) as f32);
                }
            }
            seqs.push(x);
            rows.push(y);
            s += 1;
        }
        Examples {
            inputs: Inputs::Dense { width: inputs.len(), seqs },
            targets: TargetSet::Real { width: h * targets.len(), rows },
        }
    };
    let sets: Vec<Examples> = bounds.iter().map(|&(lo, hi)| windows(lo, hi)).collect();
    if d.val_fraction > 0.0 && sets[1].is_empty() {
        return Err(data_err(
            path,
            None,
            format!("the validation part ({nv} rows) is shorter than window {w} + horizon {h}"),
        ));
    }
    // Naive baseline: the last observed value of each target, for every step ahead (RMSE in data units),
    // over the same windows as the model's in a part of the series.
    let naive = |(lo, hi): (usize, usize)| {
        let (mut se, mut cnt) = (0.0, 0usize);
        let mut s = lo;
        while s + w + h <= hi {
            for t in s + w..s + w + h {
                for &c in &targets {
                    let e = columns[c][t] - columns[c][s + w - 1];
                    se += e * e;
                    cnt += 1;
                }
            }
            s += 1;
        }
        (cnt > 0).then(|| ("naive last value".to_string(), (se / cnt as f64).sqrt()))
    };
    let (baseline, test_baseline) = (naive(bounds[1]), naive(bounds[2]));
    let mut it = sets.into_iter();
    let (train, val, test) = (it.next().expect("3 sets"), it.next().expect("3 sets"), it.next().expect("3 sets"));
    Ok(Prepared {
        data: TaskData::Examples { train: limit(train, d.limit), val, test },
        shape: TaskShape {
            input_size: inputs.len(),
            vocab: None,
            head: HeadKind::Last,
            out_size: h * targets.len(),
            loss: LossKind::Mse,
        },
        meta: TaskMeta {
            input_columns: inputs.iter().map(|&c| names[c].clone()).collect(),
            target_columns: targets.iter().map(|&c| names[c].clone()).collect(),
            input_norm: Some(fit_in),
            target_norm: Some(fit_out),
            ..empty_meta(cfg)
        },
        baseline,
        test_baseline,
    })
}

fn limit(ex: Examples, n: usize) -> Examples {
    if n == 0 || n >= ex.len() {
        ex
    } else {
        ex.select(&(0..n).collect::<Vec<_>>())
    }
}

/// Labelled multichannel sequences [example][channel][time] -> classification examples.
fn sequences(
    cfg: &TrainConfig,
    series: Vec<Vec<Vec<f64>>>,
    labels: Vec<String>,
    test: Option<(Vec<Vec<Vec<f64>>>, Vec<String>)>,
    mut classes: Vec<String>,
    rng: &mut rand_chacha::ChaCha8Rng,
) -> Result<Prepared> {
    if classes.is_empty() {
        classes = labels.clone();
        classes.sort();
        classes.dedup();
    }
    let class_of = |l: &str| -> Result<i64> {
        classes
            .iter()
            .position(|c| c == l)
            .map(|p| p as i64)
            .ok_or_else(|| config_err("label", l, "is not one of the training classes"))
    };
    let channels = series.first().map_or(0, |s| s.len());
    let to_example = |s: &[Vec<f64>], norm: &Norm| -> Vec<f32> {
        let t = s[0].len();
        let mut x = Vec::with_capacity(t * channels);
        for i in 0..t {
            for (c, ch) in s.iter().enumerate() {
                x.push(((ch[i] - norm.mean[c]) / norm.std[c]) as f32);
            }
        }
        x
    };
    // Random (seeded) split of the examples; the test part comes from the test file when there is one.
    let n = series.len();
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(rng);
    let test_frac = if test.is_some() { 0.0 } else { cfg.data.test_fraction };
    let (ntr, nv, _) = split_counts(n, cfg.data.val_fraction, test_frac, "examples")?;
    let (tr_idx, rest) = idx.split_at(ntr);
    let (va_idx, te_idx) = rest.split_at(nv);
    // Per-channel normalisation from the training examples.
    let cols: Vec<Vec<f64>> =
        (0..channels).map(|c| tr_idx.iter().flat_map(|&i| series[i][c].iter().copied()).collect()).collect();
    let norm = Norm::fit(&cols.iter().map(|c| &c[..]).collect::<Vec<_>>());
    let build = |ids: &[usize], ser: &[Vec<Vec<f64>>], lab: &[String]| -> Result<Examples> {
        Ok(Examples {
            inputs: Inputs::Dense { width: channels, seqs: ids.iter().map(|&i| to_example(&ser[i], &norm)).collect() },
            targets: TargetSet::Class(ids.iter().map(|&i| class_of(&lab[i])).collect::<Result<_>>()?),
        })
    };
    let train = build(tr_idx, &series, &labels)?;
    let val = build(va_idx, &series, &labels)?;
    let test = match &test {
        Some((ts, tl)) => build(&(0..ts.len()).collect::<Vec<_>>(), ts, tl)?,
        None => build(te_idx, &series, &labels)?,
    };
    let counts = train_class_counts(&train, classes.len());
    let test_baseline = majority_on(&counts, &test);
    let majority = counts.iter().copied().max().unwrap_or(0) as f64 / train.len().max(1) as f64;
    Ok(Prepared {
        data: TaskData::Examples { train: limit(train, cfg.data.limit), val, test },
        shape: TaskShape {
            input_size: channels,
            vocab: None,
            head: HeadKind::Last,
            out_size: classes.len(),
            loss: LossKind::CrossEntropy,
        },
        meta: TaskMeta { classes, channel_norm: Some(norm), ..empty_meta(cfg) },
        baseline: Some(("majority class (train)".into(), majority)),
        test_baseline,
    })
}

/// The accuracy on `ex` of always answering the training part's most frequent class.
fn majority_on(train_counts: &[usize], ex: &Examples) -> Option<(String, f64)> {
    let top = (0..train_counts.len()).max_by_key(|&k| (train_counts[k], std::cmp::Reverse(k)))? as i64;
    match &ex.targets {
        TargetSet::Class(v) if !v.is_empty() => {
            Some(("majority class (train)".into(), v.iter().filter(|&&y| y == top).count() as f64 / v.len() as f64))
        }
        _ => None,
    }
}

fn train_class_counts(ex: &Examples, k: usize) -> Vec<usize> {
    let mut c = vec![0; k];
    if let TargetSet::Class(v) = &ex.targets {
        for &y in v {
            c[y as usize] += 1;
        }
    }
    c
}

/// Finds `stem` or `stem.gz` in a folder.
fn find_file(dir: &Path, stem: &str) -> Result<PathBuf> {
    for name in [stem.to_string(), format!("{stem}.gz")] {
        let p = dir.join(&name);
        if p.exists() {
            return Ok(p);
        }
    }
    Err(data_err(dir, None, format!("no {stem} or {stem}.gz in this folder")))
}

/// One part of an MNIST folder (`prefix` "train" or "t10k": its images and
/// labels, plain or gzip) as sequences: rows of 28 pixels, or single pixels.
/// Also returns the images' (rows, columns). Images of any size are read;
/// labels must be digits 0-9.
pub(crate) fn mnist_part(dir: &Path, prefix: &str, pixel_by_pixel: bool) -> Result<(Examples, (usize, usize))> {
    let image_path = find_file(dir, &format!("{prefix}-images-idx3-ubyte"))?;
    let label_path = find_file(dir, &format!("{prefix}-labels-idx1-ubyte"))?;
    let images = data::read_idx(&image_path)?;
    let labels = data::read_idx(&label_path)?;
    let named = |p: &Path, e: recurrent::Error| match e {
        recurrent::Error::Data { .. } => e,
        other => data_err(p, None, other.to_string()),
    };
    let (t, width) = data::mnist_shape(&images, pixel_by_pixel).map_err(|e| named(&image_path, e))?;
    let &[_, rows, cols] = images.dims.as_slice() else {
        return Err(data_err(&image_path, None, "MNIST images must have 3 dimensions [N, rows, cols]"));
    };
    if t == 0 || width == 0 {
        return Err(data_err(&image_path, None, format!("images of {rows}x{cols} pixels are empty")));
    }
    let (xs, ys) = data::mnist_sequences(&images, &labels, pixel_by_pixel).map_err(|e| named(&label_path, e))?;
    if let Some((i, &y)) = ys.iter().enumerate().find(|(_, &y)| y > 9) {
        return Err(data_err(&label_path, None, format!("label {y} of image {} is not a digit 0-9", i + 1)));
    }
    Ok((
        Examples {
            inputs: Inputs::Dense { width, seqs: xs },
            targets: TargetSet::Class(ys.iter().map(|&v| v as i64).collect()),
        },
        (rows, cols),
    ))
}

/// Sequential MNIST from a folder of the four IDX files.
fn mnist(cfg: &TrainConfig, dir: &Path) -> Result<Prepared> {
    let (all, shape) = mnist_part(dir, "train", cfg.data.pixel_by_pixel)?;
    let (test, test_shape) = mnist_part(dir, "t10k", cfg.data.pixel_by_pixel)?;
    if test_shape != shape {
        return Err(data_err(
            dir,
            None,
            format!(
                "the t10k images are {}x{} pixels but the train images {}x{}",
                test_shape.0, test_shape.1, shape.0, shape.1
            ),
        ));
    }
    let width = if cfg.data.pixel_by_pixel { 1 } else { shape.1 };
    let n = if cfg.data.limit > 0 { cfg.data.limit.min(all.len()) } else { all.len() };
    let nv = ((n as f64 * cfg.data.val_fraction).round() as usize).max(1);
    if n <= nv {
        return Err(config_err("data.limit", n, "too few images to hold out a validation part"));
    }
    // The last images of the (limited) training file are the validation part; test is t10k (same limit).
    let nt = if cfg.data.limit > 0 { cfg.data.limit.min(test.len()) } else { test.len() };
    let range = |lo: usize, hi: usize| (lo..hi).collect::<Vec<_>>();
    Ok(Prepared {
        data: TaskData::Examples {
            train: all.select(&range(0, n - nv)),
            val: all.select(&range(n - nv, n)),
            test: test.select(&range(0, nt)),
        },
        shape: TaskShape {
            input_size: width,
            vocab: None,
            head: HeadKind::Last,
            out_size: 10,
            loss: LossKind::CrossEntropy,
        },
        meta: TaskMeta {
            classes: (0..10).map(|d| d.to_string()).collect(),
            image_shape: Some(shape),
            ..empty_meta(cfg)
        },
        baseline: Some(("chance".into(), 0.1)),
        test_baseline: Some(("chance".into(), 0.1)),
    })
}

/// Token-sequence classification from a CSV/TSV of (label, text).
fn tokens(cfg: &TrainConfig, path: &Path, rng: &mut rand_chacha::ChaCha8Rng) -> Result<Prepared> {
    let split = cfg.data.split;
    let delim = (cfg.data.delimiter != ",").then(|| cfg.data.delimiter.as_bytes()[0]);
    let rows =
        data::read_token_examples(path, delim, cfg.data.header, &cfg.data.label_column, &cfg.data.text_column, split)?;
    let n = rows.len();
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(rng);
    let (ntr, nv, _) = split_counts(n, cfg.data.val_fraction, cfg.data.test_fraction, "examples")?;
    let vocab = Vocab::build(
        idx[..ntr].iter().flat_map(|&i| rows.examples[i].ids.iter().map(|&t| rows.tokens[t as usize].as_str())),
        &["<pad>", "<unk>"],
    );
    let unk = vocab.id("<unk>");
    // The file's token ids to the vocabulary's (unk for tokens seen only outside training).
    let index = vocab.index();
    let to_vocab: Vec<Option<usize>> = rows.tokens.iter().map(|t| index.get(t.as_str()).copied().or(unk)).collect();
    let mut classes: Vec<String> = idx[..ntr].iter().map(|&i| rows.examples[i].label.clone()).collect();
    classes.sort();
    classes.dedup();
    let build = |ids: &[usize]| -> Result<Examples> {
        let mut seqs = Vec::new();
        let mut ys = Vec::new();
        for &i in ids {
            let ex = &rows.examples[i];
            let seq = ex
                .ids
                .iter()
                .map(|&t| {
                    to_vocab[t as usize].ok_or_else(|| {
                        data_err(
                            path,
                            Some(ex.line),
                            format!("token \"{}\" is not in the vocabulary", rows.tokens[t as usize]),
                        )
                    })
                })
                .collect::<Result<Vec<usize>>>()?;
            seqs.push(seq);
            ys.push(classes.iter().position(|c| c == &ex.label).map_or(
                Err(data_err(
                    path,
                    Some(ex.line),
                    format!("label \"{}\" does not occur in the training part", data::echo(&ex.label)),
                )),
                |p| Ok(p as i64),
            )?);
        }
        Ok(Examples { inputs: Inputs::Tokens { seqs }, targets: TargetSet::Class(ys) })
    };
    let train = build(&idx[..ntr])?;
    let val = build(&idx[ntr..ntr + nv])?;
    let test = build(&idx[ntr + nv..])?;
    let counts = train_class_counts(&train, classes.len());
    let test_baseline = majority_on(&counts, &test);
    let majority = counts.iter().copied().max().unwrap_or(0) as f64 / train.len().max(1) as f64;
    Ok(Prepared {
        data: TaskData::Examples { train: limit(train, cfg.data.limit), val, test },
        shape: TaskShape {
            input_size: cfg.model.emb_dim,
            vocab: Some(vocab.len()),
            head: HeadKind::Last,
            out_size: classes.len(),
            loss: LossKind::CrossEntropy,
        },
        meta: TaskMeta { classes, vocab: Some(vocab), ..empty_meta(cfg) },
        baseline: Some(("majority class (train)".into(), majority)),
        test_baseline,
    })
}

/// Character-level language model: contiguous train / validation / test parts of one text.
fn charlm(cfg: &TrainConfig, path: &Path) -> Result<Prepared> {
    let text = data::read_text(path)?;
    // No Vec<char> or copies of the text: memory is the text and the ids.
    let n = text.chars().count();
    let (ntr, nv, _) = split_counts(n, cfg.data.val_fraction, cfg.data.test_fraction, "characters")?;
    let byte_at = |k: usize| text.char_indices().nth(k).map_or(text.len(), |(b, _)| b);
    let (b_tr, b_v) = (byte_at(ntr), byte_at(ntr + nv));
    let vocab = data::char_vocab(&text[..b_tr]);
    // Characters never seen in training map to an explicit <unk>.
    let mut tokens = vocab.tokens.clone();
    tokens.push("<unk>".into());
    let vocab = Vocab { tokens };
    let unk = vocab.len() - 1;
    let index = vocab.index();
    let enc = |part: &str| -> Vec<usize> {
        let mut buf = [0u8; 4];
        part.chars().map(|c| *index.get(&*c.encode_utf8(&mut buf)).unwrap_or(&unk)).collect()
    };
    let (train, val, test) = (enc(&text[..b_tr]), enc(&text[b_tr..b_v]), enc(&text[b_v..]));
    if train.len() < cfg.train.batch * 2 {
        return Err(data_err(
            path,
            None,
            format!("{} training characters are too few for batch {}", train.len(), cfg.train.batch),
        ));
    }
    let v = vocab.len();
    Ok(Prepared {
        data: TaskData::Stream { train, val, test },
        shape: TaskShape {
            input_size: cfg.model.emb_dim,
            vocab: Some(v),
            head: HeadKind::Every,
            out_size: v,
            loss: LossKind::CrossEntropy,
        },
        meta: TaskMeta { vocab: Some(vocab), ..empty_meta(cfg) },
        baseline: Some(("uniform over the vocabulary (bits/char)".into(), (v as f64).log2())),
        test_baseline: Some(("uniform over the vocabulary (bits/char)".into(), (v as f64).log2())),
    })
}

fn empty_meta(cfg: &TrainConfig) -> TaskMeta {
    TaskMeta {
        task: cfg.task.to_string(),
        data: cfg.data.clone(),
        input_columns: Vec::new(),
        target_columns: Vec::new(),
        input_norm: None,
        target_norm: None,
        classes: Vec::new(),
        vocab: None,
        channel_norm: None,
        image_shape: None,
    }
}

/// The adding problem (Hochreiter & Schmidhuber 1997).
fn adding(cfg: &TrainConfig, rng: &mut rand_chacha::ChaCha8Rng) -> Result<Prepared> {
    let (n, t) = (cfg.data.samples, cfg.data.length);
    let (x, y) = data::adding_problem(n, t, rng)?;
    let ex = Examples {
        inputs: Inputs::Dense { width: 2, seqs: x.chunks_exact(t * 2).map(|c| c.to_vec()).collect() },
        targets: TargetSet::Real { width: 1, rows: y.iter().map(|&v| vec![v]).collect() },
    };
    let (ntr, nv, _) = split_counts(n, cfg.data.val_fraction, cfg.data.test_fraction, "data.samples")?;
    let all: Vec<usize> = (0..n).collect();
    Ok(Prepared {
        data: TaskData::Examples {
            train: ex.select(&all[..ntr]),
            val: ex.select(&all[ntr..ntr + nv]),
            test: ex.select(&all[ntr + nv..]),
        },
        shape: TaskShape { input_size: 2, vocab: None, head: HeadKind::Last, out_size: 1, loss: LossKind::Mse },
        meta: empty_meta(cfg),
        // Always answering 1 (the mean of the sum of two U(0,1)) has MSE 1/6.
        baseline: Some(("constant 1.0 (MSE)".into(), 1.0 / 6.0)),
        test_baseline: Some(("constant 1.0 (MSE)".into(), 1.0 / 6.0)),
    })
}

/// The copy (memory) task.
fn copy(cfg: &TrainConfig, rng: &mut rand_chacha::ChaCha8Rng) -> Result<Prepared> {
    let n = cfg.data.samples;
    let (toks, targets, t, vocab) = data::copy_task(n, cfg.data.length, cfg.data.delay, cfg.data.symbols, rng)?;
    let ex = Examples {
        inputs: Inputs::Tokens { seqs: toks.chunks_exact(t).map(|c| c.to_vec()).collect() },
        targets: TargetSet::ClassSeq(targets.chunks_exact(t).map(|c| c.to_vec()).collect()),
    };
    let (ntr, nv, _) = split_counts(n, cfg.data.val_fraction, cfg.data.test_fraction, "data.samples")?;
    let all: Vec<usize> = (0..n).collect();
    Ok(Prepared {
        data: TaskData::Examples {
            train: ex.select(&all[..ntr]),
            val: ex.select(&all[ntr..ntr + nv]),
            test: ex.select(&all[ntr + nv..]),
        },
        shape: TaskShape {
            input_size: cfg.model.emb_dim,
            vocab: Some(vocab),
            head: HeadKind::Every,
            out_size: vocab,
            loss: LossKind::CrossEntropy,
        },
        meta: empty_meta(cfg),
        baseline: Some(("chance over the symbols".into(), 1.0 / cfg.data.symbols as f64)),
        test_baseline: Some(("chance over the symbols".into(), 1.0 / cfg.data.symbols as f64)),
    })
}
