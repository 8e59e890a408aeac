//! Using a trained model: evaluation on a data set, predictions (CSV in,
//! CSV out), text generation. Each reads what the checkpoint stored
//! (normalisation, columns, vocabulary, classes) and never refits it.

use super::task::{Examples, Inputs, Norm, TargetSet, TaskMeta};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use recurrent::checkpoint;
use recurrent::error::{config_err, data_err, Result};
use recurrent::model::{Batch, Model, SeqInput};
use recurrent::train::{evaluate, evaluate_stream, make_batch, DataSource, Evaluation};
use recurrent_data::{self as data, CsvOptions};
use std::path::Path;

/// A checkpoint with its task metadata.
pub struct Loaded {
    pub model: Model<f32>,
    pub meta: TaskMeta,
}

/// Loads a checkpoint and its task metadata.
pub fn load(path: &Path) -> Result<Loaded> {
    let (model, m) = checkpoint::load::<f32>(path)?;
    let meta: TaskMeta = serde_json::from_value(m.task.clone()).map_err(|e| {
        data_err(path, None, format!("metadata \"recurrent\".task is not a recurrent task description: {e}"))
    })?;
    check_fits(&model, &meta).map_err(|problem| data_err(path, None, problem))?;
    Ok(Loaded { model, meta })
}

/// Checks that the model's head and output width fit its task, so a
/// checkpoint written elsewhere cannot be read with the wrong layout.
fn check_fits(model: &Model<f32>, meta: &TaskMeta) -> std::result::Result<(), String> {
    use recurrent::model::HeadKind;
    let (head, o) = (model.cfg.head, model.cfg.out_size);
    let want_head = if matches!(meta.task.as_str(), "charlm" | "copy") { HeadKind::Every } else { HeadKind::Last };
    if head != want_head {
        return Err(format!(
            "task {} needs head \"{}\", the model has \"{}\"",
            meta.task,
            if want_head == HeadKind::Last { "last" } else { "every" },
            if head == HeadKind::Last { "last" } else { "every" }
        ));
    }
    if matches!(meta.task.as_str(), "forecast" | "mackey-glass") {
        let (w, h) = (meta.data.window, meta.data.horizon);
        if w == 0 || h == 0 || w.checked_add(h).is_none_or(|n| n > u32::MAX as usize) {
            return Err(format!("task.data window {w} and horizon {h} must be at least 1 and of a sane size"));
        }
    }
    if meta.data.delimiter.len() != 1 {
        return Err(format!("data.delimiter {:?} must be one character", meta.data.delimiter));
    }
    let need = match meta.task.as_str() {
        "forecast" | "mackey-glass" => Some(meta.data.horizon * meta.target_columns.len()),
        "classify" | "ts" | "tokens" | "mnist" => Some(meta.classes.len()),
        "charlm" => meta.vocab.as_ref().map(|v| v.len()),
        _ => None,
    };
    if let Some(n) = need {
        if n != o {
            return Err(format!("the model outputs {o} values but task {} needs {n}", meta.task));
        }
    }
    // Every normalisation list must cover the columns or channels it scales.
    let norms = [
        ("input_norm", meta.input_norm.as_ref(), meta.input_columns.len()),
        ("target_norm", meta.target_norm.as_ref(), meta.target_columns.len()),
    ];
    for (key, norm, columns) in norms {
        if let Some(n) = norm {
            if n.mean.len() != columns || n.std.len() != columns {
                return Err(format!(
                    "task.{key} has {} means and {} deviations for {columns} columns",
                    n.mean.len(),
                    n.std.len()
                ));
            }
            if n.mean.iter().chain(&n.std).any(|v| !v.is_finite()) || n.std.iter().any(|&v| v <= 0.0) {
                return Err(format!("task.{key} holds a non-finite value or a deviation that is not positive"));
            }
        }
    }
    if let Some(n) = &meta.channel_norm {
        let i = model.cfg.rnn.input_size;
        if n.mean.len() != i || n.std.len() != i {
            return Err(format!(
                "task.channel_norm has {} means and {} deviations; the model reads {i} channels",
                n.mean.len(),
                n.std.len()
            ));
        }
        if n.mean.iter().chain(&n.std).any(|v| !v.is_finite()) || n.std.iter().any(|&v| v <= 0.0) {
            return Err("task.channel_norm holds a non-finite value or a deviation that is not positive".into());
        }
    }
    if let (Some(v), Some(mv)) = (&meta.vocab, model.cfg.vocab) {
        if v.len() != mv {
            return Err(format!("task.vocab has {} tokens but the model's embedding {mv}", v.len()));
        }
    }
    if matches!(meta.task.as_str(), "forecast" | "mackey-glass") && meta.input_columns.len() != model.cfg.rnn.input_size
    {
        return Err(format!(
            "the model reads {} inputs but the task lists {} input columns",
            model.cfg.rnn.input_size,
            meta.input_columns.len()
        ));
    }
    Ok(())
}

/// One-step-ahead forecast of the first target over `ex`, in data units: (actual, forecast).
pub fn forecast_series(model: &Model<f32>, ex: &Examples, norm: &Norm, batch: usize) -> Result<(Vec<f64>, Vec<f64>)> {
    let (mut actual, mut forecast) = (Vec::new(), Vec::new());
    let o = model.cfg.out_size;
    let idx: Vec<usize> = (0..ex.len()).collect();
    for chunk in idx.chunks(batch.max(1)) {
        let bb = make_batch(ex, chunk);
        let out = model.predict(&bb.batch(), None)?;
        for r in 0..bb.b {
            actual.push(bb.real[r * o] as f64 * norm.std[0] + norm.mean[0]);
            forecast.push(out.y[r * o] as f64 * norm.std[0] + norm.mean[0]);
        }
    }
    Ok((actual, forecast))
}

fn csv_opts(meta: &TaskMeta) -> CsvOptions {
    CsvOptions {
        header: meta.data.header,
        delimiter: meta.data.delimiter.as_bytes().first().copied().unwrap_or(b','),
        date_column: meta.data.date_column.clone(),
    }
}

/// Forecast windows over a whole table with the stored normalisation. With
/// `with_targets`, only windows whose horizon is inside the data (for
/// evaluation); otherwise every window (for prediction). Returns the
/// examples and, per window, the index of its last input row.
fn forecast_windows(
    meta: &TaskMeta,
    path: &Path,
    with_targets: bool,
) -> Result<(Examples, Vec<usize>, Option<Vec<String>>)> {
    let table = data::read_table(path, &csv_opts(meta))?;
    let (ni, no) = (meta.input_norm.as_ref(), meta.target_norm.as_ref());
    let (ni, no) = (
        ni.ok_or_else(|| data_err(path, None, "checkpoint lacks input normalisation"))?,
        no.ok_or_else(|| data_err(path, None, "checkpoint lacks target normalisation"))?,
    );
    let ins: Vec<&[f64]> = meta.input_columns.iter().map(|c| table.column(c)).collect::<Result<_>>()?;
    let outs: Vec<&[f64]> = meta.target_columns.iter().map(|c| table.column(c)).collect::<Result<_>>()?;
    let (w, h) = (meta.data.window, meta.data.horizon);
    let n = table.rows();
    let need = if with_targets { w + h } else { w };
    if n < need {
        return Err(data_err(
            path,
            None,
            format!(
                "{n} rows are fewer than window {w}{}",
                if with_targets { format!(" + horizon {h}") } else { String::new() }
            ),
        ));
    }
    let (mut seqs, mut rows, mut ends) = (Vec::new(), Vec::new(), Vec::new());
    for s in 0..=n - need {
        let mut x = Vec::with_capacity(w * ins.len());
        for t in s..s + w {
            for (k, c) in ins.iter().enumerate() {
                x.push(((c[t] - ni.mean[k]) / ni.std[k]) as f32);
            }
        }
        let mut y = Vec::new();
        if with_targets {
            for t in s + w..s + w + h {
                for (k, c) in outs.iter().enumerate() {
                    y.push(((c[t] - no.mean[k]) / no.std[k]) as f32);
                }
            }
        } else {
            y = vec![0.0; h * outs.len()];
        }
        seqs.push(x);
        rows.push(y);
        ends.push(s + w - 1);
    }
    let ex = Examples {
        inputs: Inputs::Dense { width: ins.len(), seqs },
        targets: TargetSet::Real { width: h * outs.len(), rows },
    };
    super::task::check_finite(path, &ex)?;
    Ok((ex, ends, table.dates.clone()))
}

/// Labelled sequences of a classification data file, with the stored normalisation and classes.
fn labelled(meta: &TaskMeta, path: &Path, need_labels: bool) -> Result<(Examples, Vec<String>)> {
    let (series, labels): (Vec<Vec<Vec<f64>>>, Vec<String>) = match meta.task.as_str() {
        "classify" => {
            let r = data::read_labeled_rows(
                path,
                meta.data.header,
                meta.data.delimiter.as_bytes()[0],
                &meta.data.label_column,
            )?;
            (r.rows.into_iter().map(|v| vec![v]).collect(), r.labels)
        }
        _ => {
            let t = data::read_ts(path)?;
            (t.series, t.labels)
        }
    };
    let norm =
        meta.channel_norm.as_ref().ok_or_else(|| data_err(path, None, "checkpoint lacks the channel normalisation"))?;
    let channels = norm.mean.len();
    let mut seqs = Vec::new();
    for (i, s) in series.iter().enumerate() {
        if s.len() != channels {
            return Err(data_err(
                path,
                None,
                format!("example {} has {} channels; the model reads {channels}", i + 1, s.len()),
            ));
        }
        let t = s[0].len();
        seqs.push(
            (0..t)
                .flat_map(|k| s.iter().enumerate().map(move |(c, ch)| ((ch[k] - norm.mean[c]) / norm.std[c]) as f32))
                .collect(),
        );
    }
    let ys: Vec<i64> = if need_labels {
        labels
            .iter()
            .map(|l| {
                meta.classes.iter().position(|c| c == l).map(|p| p as i64).ok_or_else(|| {
                    data_err(path, None, format!("label \"{}\" is not one of the model's classes", data::echo(l)))
                })
            })
            .collect::<Result<_>>()?
    } else {
        vec![0; seqs.len()]
    };
    let ex = Examples { inputs: Inputs::Dense { width: channels, seqs }, targets: TargetSet::Class(ys) };
    super::task::check_finite(path, &ex)?;
    Ok((ex, labels))
}

fn token_examples(meta: &TaskMeta, path: &Path, need_labels: bool) -> Result<Examples> {
    let vocab = meta.vocab.as_ref().ok_or_else(|| data_err(path, None, "checkpoint lacks the vocabulary"))?;
    let split = meta.data.split;
    let delim = (meta.data.delimiter != ",").then(|| meta.data.delimiter.as_bytes()[0]);
    let rows = data::read_token_examples(
        path,
        delim,
        meta.data.header,
        &meta.data.label_column,
        &meta.data.text_column,
        split,
    )?;
    let unk = vocab.id("<unk>");
    let index = vocab.index();
    let to_vocab: Vec<Option<usize>> = rows.tokens.iter().map(|t| index.get(t.as_str()).copied().or(unk)).collect();
    let mut seqs = Vec::new();
    let mut ys = Vec::new();
    for ex in &rows.examples {
        let seq = ex
            .ids
            .iter()
            .map(|&t| {
                to_vocab[t as usize].ok_or_else(|| {
                    data_err(
                        path,
                        Some(ex.line),
                        format!("token \"{}\" is not in the model's vocabulary", data::echo(&rows.tokens[t as usize])),
                    )
                })
            })
            .collect::<Result<Vec<usize>>>()?;
        seqs.push(seq);
        ys.push(if need_labels {
            meta.classes.iter().position(|c| c == &ex.label).map(|p| p as i64).ok_or_else(|| {
                data_err(
                    path,
                    Some(ex.line),
                    format!("label \"{}\" is not one of the model's classes", data::echo(&ex.label)),
                )
            })?
        } else {
            0
        });
    }
    Ok(Examples { inputs: Inputs::Tokens { seqs }, targets: TargetSet::Class(ys) })
}

/// The t10k images of an MNIST folder, refused when their size differs
/// from the training images' (or, for checkpoints that do not record it,
/// when a row is not as wide as the model's input).
fn mnist_examples(l: &Loaded, dir: &Path) -> Result<Examples> {
    let (ex, (rows, cols)) = super::task::mnist_part(dir, "t10k", l.meta.data.pixel_by_pixel)?;
    let refuse = |want: String| {
        Err(data_err(
            dir,
            None,
            format!("the t10k images are {rows}x{cols} pixels but the model was trained on {want}"),
        ))
    };
    match l.meta.image_shape {
        Some((r, c)) if (r, c) != (rows, cols) => return refuse(format!("{r}x{c} images")),
        Some(_) => {}
        None => {
            let width = if l.meta.data.pixel_by_pixel { 1 } else { cols };
            if width != l.model.cfg.rnn.input_size {
                return refuse(format!("rows of {} pixels", l.model.cfg.rnn.input_size));
            }
        }
    }
    Ok(ex)
}

/// Loss and metric of a checkpoint on a data file (forecast, classify, ts, tokens, charlm) or an
/// MNIST folder (its t10k test files).
pub fn eval(l: &Loaded, path: &Path, batch: usize) -> Result<(Evaluation, String)> {
    let task: super::config::Task = l.meta.task.parse()?;
    let metric = super::task::metric_of(task, l.meta.target_norm.as_ref());
    let ev = match l.meta.task.as_str() {
        "forecast" | "mackey-glass" => evaluate(&l.model, &forecast_windows(&l.meta, path, true)?.0, batch, &metric)?,
        "classify" | "ts" => evaluate(&l.model, &labelled(&l.meta, path, true)?.0, batch, &metric)?,
        "tokens" => evaluate(&l.model, &token_examples(&l.meta, path, true)?, batch, &metric)?,
        "mnist" => evaluate(&l.model, &mnist_examples(l, path)?, batch, &metric)?,
        "charlm" => {
            let text = data::read_text(path)?;
            let ids = encode_text(&l.meta, &text, path)?;
            evaluate_stream(&l.model, &ids, batch, l.meta.data.window.max(1).max(50), &metric)?
        }
        other => {
            return Err(config_err(
                "task",
                other,
                "eval reads a data file; this checkpoint's task generates its data (retrain to evaluate)",
            ))
        }
    };
    Ok((ev, metric.name().into()))
}

fn encode_text(meta: &TaskMeta, text: &str, path: &Path) -> Result<Vec<usize>> {
    let vocab = meta.vocab.as_ref().ok_or_else(|| data_err(path, None, "checkpoint lacks the vocabulary"))?;
    let index = vocab.index();
    let unk = vocab.id("<unk>");
    let mut buf = [0u8; 4];
    text.chars()
        .map(|c| {
            index.get(&*c.encode_utf8(&mut buf)).copied().or(unk).ok_or_else(|| {
                data_err(
                    path,
                    None,
                    format!("character \"{}\" is not in the model's vocabulary", data::echo(&c.to_string())),
                )
            })
        })
        .collect()
}

/// Predictions as CSV text. Forecasting: one row per window end with the
/// horizon's forecasts (`<target>_t+<k>`) in data units. Classification: the
/// predicted class of each example.
pub fn predict(l: &Loaded, path: &Path, batch: usize) -> Result<String> {
    let mut out = String::new();
    match l.meta.task.as_str() {
        "forecast" | "mackey-glass" => {
            let (ex, ends, dates) = forecast_windows(&l.meta, path, false)?;
            let norm = l
                .meta
                .target_norm
                .as_ref()
                .ok_or_else(|| data_err(path, None, "checkpoint lacks target normalisation"))?;
            let nt = l.meta.target_columns.len();
            out.push_str(if dates.is_some() { "date" } else { "row" });
            for k in 1..=l.meta.data.horizon {
                for c in &l.meta.target_columns {
                    out.push_str(&format!(",{c}_t+{k}"));
                }
            }
            out.push('\n');
            let idx: Vec<usize> = (0..ex.len()).collect();
            let o = l.model.cfg.out_size;
            for chunk in idx.chunks(batch.max(1)) {
                let bb = make_batch(&ex, chunk);
                let y = l.model.predict(&bb.batch(), None)?;
                for (r, &i) in chunk.iter().enumerate() {
                    let end = ends[i];
                    out.push_str(&dates.as_ref().map_or(end.to_string(), |d| d[end].clone()));
                    for j in 0..o {
                        let v = y.y[r * o + j] as f64 * norm.std[j % nt] + norm.mean[j % nt];
                        out.push_str(&format!(",{v}"));
                    }
                    out.push('\n');
                }
            }
        }
        "classify" | "ts" | "tokens" | "mnist" => {
            let ex = match l.meta.task.as_str() {
                "tokens" => token_examples(&l.meta, path, false)?,
                "mnist" => mnist_examples(l, path)?,
                _ => labelled(&l.meta, path, false)?.0,
            };
            out.push_str("example,predicted\n");
            let idx: Vec<usize> = (0..ex.len()).collect();
            let o = l.model.cfg.out_size;
            for chunk in idx.chunks(batch.max(1)) {
                let bb = make_batch(&ex, chunk);
                let y = l.model.predict(&bb.batch(), None)?;
                for (r, &i) in chunk.iter().enumerate() {
                    let row = &y.y[r * o..(r + 1) * o];
                    let arg = row.iter().enumerate().fold(0, |b, (j, v)| if *v > row[b] { j } else { b });
                    out.push_str(&format!("{},{}\n", i + 1, l.meta.classes.get(arg).map_or("?", |s| s.as_str())));
                }
            }
        }
        other => {
            return Err(config_err(
                "task",
                other,
                "predict handles forecast, classify, ts, tokens and mnist models; use generate for charlm",
            ))
        }
    }
    Ok(out)
}

/// Generates `length` characters after `prompt` from a character LM,
/// sampling with `temperature` from the `top_k` most likely characters (0: all).
pub fn generate(l: &Loaded, prompt: &str, length: usize, temperature: f64, top_k: usize, seed: u64) -> Result<String> {
    if l.meta.task != "charlm" {
        return Err(config_err("task", &l.meta.task, "generate needs a charlm checkpoint"));
    }
    if !(temperature > 0.0 && temperature.is_finite()) {
        return Err(config_err("temperature", temperature, "must be a positive number"));
    }
    let vocab = l.meta.vocab.as_ref().ok_or_else(|| config_err("checkpoint", "vocab", "is missing"))?;
    let mut ids = encode_text(&l.meta, prompt, Path::new("<prompt>"))?;
    if ids.is_empty() {
        ids.push(0);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut state = l.model.zero_state(1);
    let o = l.model.cfg.out_size;
    let mut out = String::from(prompt);
    // Feed the prompt, then one sampled character at a time.
    let mut feed: Vec<usize> = ids;
    for _ in 0..length {
        let batch =
            Batch { input: SeqInput::Tokens(&feed), batch: 1, seq_len: feed.len(), batch_first: true, lengths: None };
        let y = l.model.predict(&batch, Some(&state))?;
        state = y.state;
        let logits = &y.y[(feed.len() - 1) * o..feed.len() * o];
        let mut order: Vec<usize> = (0..o).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
        let keep = if top_k == 0 { o } else { top_k.min(o) };
        let m = logits[order[0]] as f64;
        let w: Vec<f64> = order[..keep].iter().map(|&j| ((logits[j] as f64 - m) / temperature).exp()).collect();
        let total: f64 = w.iter().sum();
        let mut u = rng.gen::<f64>() * total;
        let mut pick = order[keep - 1];
        for (k, &wk) in w.iter().enumerate() {
            if u < wk {
                pick = order[k];
                break;
            }
            u -= wk;
        }
        out.push_str(vocab.token(pick).unwrap_or("?"));
        feed = vec![pick];
    }
    Ok(out)
}
