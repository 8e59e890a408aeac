//! Loss and metric of a model on examples or on a token stream, optionally
//! split across the processes of a distributed run.

use super::config::Metric;
use super::data::{make_batch, stream_batch, stream_rows, BatchBuf, DataSource, TrainData};
use crate::distributed::{agree, shard, Comm, Single};
use crate::error::Result;
use crate::grad::tbptt::{windows, Stream, Truncation};
use crate::loss::{loss_forward_backward, Targets, IGNORE_INDEX};
use crate::model::Model;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Loss and metric of a model on a set of examples (or a stream).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// Mean loss over all scored elements (nats for cross-entropy).
    pub loss: f64,
    /// The configured metric (rmse in data units, accuracy, bits per char, loss).
    pub metric: f64,
}

/// Sums behind loss and metric, accumulated over batches.
#[derive(Default)]
struct Acc {
    loss_sum: f64,
    count: usize,
    se: f64,
    se_n: usize,
    correct: usize,
    total: usize,
}

impl Acc {
    /// Adds the outputs `y` [rows, O] of `counted` rows against `targets`.
    fn add(
        &mut self,
        model: &Model<f32>,
        y: &[f32],
        targets: Targets<f32>,
        counted: &[bool],
        scale: &[f64],
    ) -> Result<()> {
        let o = model.cfg.out_size;
        let (l, _, n) = loss_forward_backward(model.cfg.loss, y, counted.len(), o, targets, counted)?;
        self.loss_sum += l as f64 * n as f64;
        self.count += n;
        match targets {
            Targets::Class(c) => {
                for (r, &k) in c.iter().enumerate() {
                    if counted[r] && k != IGNORE_INDEX {
                        let row = &y[r * o..(r + 1) * o];
                        let arg = row.iter().enumerate().fold(0, |best, (j, v)| if *v > row[best] { j } else { best });
                        self.correct += usize::from(arg as i64 == k);
                        self.total += 1;
                    }
                }
            }
            Targets::Real(t) => {
                for r in (0..counted.len()).filter(|&r| counted[r]) {
                    for j in 0..o {
                        // Errors in data units: undo the target normalisation.
                        let s = if scale.is_empty() { 1.0 } else { scale[j % scale.len()] };
                        let e = (y[r * o + j] - t[r * o + j]) as f64 * s;
                        self.se += e * e;
                        self.se_n += 1;
                    }
                }
            }
        }
        Ok(())
    }

    /// Sums the accumulators of all ranks.
    fn reduce(&self, comm: &dyn Comm) -> Acc {
        let mine =
            [self.loss_sum, self.count as f64, self.se, self.se_n as f64, self.correct as f64, self.total as f64];
        let mut all = [0.0f64; 6];
        comm.allreduce_sum_f64(&mine, &mut all);
        // Counts are whole numbers far below 2^53: exact in f64.
        Acc {
            loss_sum: all[0],
            count: all[1] as usize,
            se: all[2],
            se_n: all[3] as usize,
            correct: all[4] as usize,
            total: all[5] as usize,
        }
    }

    fn finish(&self, metric: &Metric) -> Evaluation {
        let loss = if self.count > 0 { self.loss_sum / self.count as f64 } else { f64::NAN };
        let metric = match metric {
            Metric::Accuracy => self.correct as f64 / self.total.max(1) as f64,
            Metric::Rmse { .. } => (self.se / self.se_n.max(1) as f64).sqrt(),
            Metric::Bpc => loss / std::f64::consts::LN_2,
            Metric::Loss | Metric::Mse => loss,
        };
        Evaluation { loss, metric }
    }
}

fn scale_of(metric: &Metric) -> &[f64] {
    match metric {
        Metric::Rmse { scale } => scale,
        _ => &[],
    }
}

/// Evaluates `model` on examples (no dropout), in batches of `batch`.
pub fn evaluate(model: &Model<f32>, src: &dyn DataSource, batch: usize, metric: &Metric) -> Result<Evaluation> {
    evaluate_on(model, src, batch, metric, &Single)
}

/// `evaluate` split across the ranks of `comm`: each scores its contiguous
/// shard of the examples, the sums behind loss and metric are added up.
pub fn evaluate_on(
    model: &Model<f32>,
    src: &dyn DataSource,
    batch: usize,
    metric: &Metric,
    comm: &dyn Comm,
) -> Result<Evaluation> {
    let idx: Vec<usize> = shard(src.len(), comm.rank(), comm.size()).collect();
    let local = (|| {
        let mut acc = Acc::default();
        for chunk in idx.chunks(batch.max(1)) {
            let bb = make_batch(src, chunk);
            let (out, cache) = model.forward::<ChaCha8Rng>(&bb.batch(), None, None)?;
            acc.add(model, &out.y, bb.targets(), &model.counted_rows(&cache), scale_of(metric))?;
            model.recycle(cache);
        }
        Ok(acc)
    })();
    Ok(agree(comm, local)?.reduce(comm).finish(metric))
}

/// Evaluates a language model on a token stream cut into `b` parallel
/// streams, carrying the state across windows of `k` steps.
pub fn evaluate_stream(model: &Model<f32>, ids: &[usize], b: usize, k: usize, metric: &Metric) -> Result<Evaluation> {
    evaluate_stream_on(model, ids, b, k, metric, &Single)
}

/// `evaluate_stream` split across the ranks of `comm`: the parallel streams
/// are shared out contiguously, each rank carries the state of its own.
pub fn evaluate_stream_on(
    model: &Model<f32>,
    ids: &[usize],
    b: usize,
    k: usize,
    metric: &Metric,
    comm: &dyn Comm,
) -> Result<Evaluation> {
    let all = stream_batch(ids, b.min(ids.len().saturating_sub(1)).max(1))?;
    let rows = shard(all.b, comm.rank(), comm.size());
    let local = if comm.size() == 1 {
        stream_acc(model, &all, k)
    } else if rows.is_empty() {
        Ok(Acc::default())
    } else {
        stream_acc(model, &stream_rows(&all, rows), k)
    };
    Ok(agree(comm, local)?.reduce(comm).finish(metric))
}

/// Evaluates on either kind of data: examples in batches of `batch`, a
/// stream in `batch` parallel streams and windows of `k` steps.
pub fn evaluate_data(
    model: &Model<f32>,
    data: TrainData,
    batch: usize,
    k: usize,
    metric: &Metric,
    comm: &dyn Comm,
) -> Result<Evaluation> {
    match data {
        TrainData::Examples(src) => evaluate_on(model, src, batch, metric, comm),
        TrainData::Stream(ids) => evaluate_stream_on(model, ids, batch, k, metric, comm),
    }
}

/// Loss sums of a language model over the parallel streams of `bb`.
fn stream_acc(model: &Model<f32>, bb: &BatchBuf, k: usize) -> Result<Acc> {
    let stream = Stream::new(model, &bb.batch(), bb.targets())?;
    let mut acc = Acc::default();
    let mut state = model.zero_state(bb.b);
    let init = state.clone();
    for w in windows(stream.seq_len(), Truncation::new(k, k)?) {
        let r = stream.window::<ChaCha8Rng>(model, w, Some(&state), None, None)?;
        // Window targets, time-major as the window's output.
        let tm: Vec<i64> = (w.start..w.end)
            .flat_map(|t| (0..bb.b).map(move |r| (t, r)))
            .map(|(t, r)| bb.class[r * bb.t + t])
            .collect();
        acc.add(model, &r.output.y, Targets::Class(&tm), &model.counted_rows(&r.cache), &[])?;
        state = stream.state_at(model, w, &r.cache, w.end, &init);
        // The window's buffers serve the next window.
        model.recycle(r.cache);
    }
    Ok(acc)
}
