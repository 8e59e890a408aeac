//! What the Trainer trains on: a [`DataSource`] of independent examples
//! (batched, shuffled, padded) or one token stream cut into parallel streams.
//! [`Examples`] is the in-memory source, built from arrays and lengths.
//!
//! Shapes: B batch, T time (padded), I input width, O output width.

use crate::error::{check_len, config_err, Result};
use crate::grad::tbptt::Window;
use crate::loss::{Targets, IGNORE_INDEX};
use crate::model::{Batch, SeqInput};

/// Inputs of a set of examples.
#[derive(Clone, Debug, PartialEq)]
pub enum Inputs {
    /// Real-valued sequences, each [T_i * width] (time-major within the example).
    Dense {
        /// I: features per step.
        width: usize,
        /// One sequence per example.
        seqs: Vec<Vec<f32>>,
    },
    /// Token sequences, each [T_i].
    Tokens {
        /// One sequence per example.
        seqs: Vec<Vec<usize>>,
    },
}

/// Targets of a set of examples.
#[derive(Clone, Debug, PartialEq)]
pub enum TargetSet {
    /// One real vector [width] per example (last-step head).
    Real {
        /// O: values per example.
        width: usize,
        /// One row per example.
        rows: Vec<Vec<f32>>,
    },
    /// One class per example (last-step head).
    Class(Vec<i64>),
    /// One class per step [T_i] (every-step head; `IGNORE_INDEX` where not scored).
    ClassSeq(Vec<Vec<i64>>),
}

/// A set of examples held in memory (train, validation or test).
#[derive(Clone, Debug, PartialEq)]
pub struct Examples {
    /// The input sequences.
    pub inputs: Inputs,
    /// Their targets.
    pub targets: TargetSet,
}

/// One padded batch, batch-first.
#[derive(Clone, Debug, Default)]
pub struct BatchBuf {
    /// B
    pub b: usize,
    /// T (padded length)
    pub t: usize,
    /// [B, T, I] real inputs (empty for tokens).
    pub x: Vec<f32>,
    /// [B, T] token ids (empty for real inputs).
    pub toks: Vec<usize>,
    /// [B] length of each sequence.
    pub lengths: Vec<usize>,
    /// Real targets [B, O].
    pub real: Vec<f32>,
    /// Class targets [B] or [B, T].
    pub class: Vec<i64>,
}

impl BatchBuf {
    /// The library batch view.
    pub fn batch(&self) -> Batch<'_, f32> {
        let input = if self.toks.is_empty() { SeqInput::Dense(&self.x) } else { SeqInput::Tokens(&self.toks) };
        Batch { input, batch: self.b, seq_len: self.t, batch_first: true, lengths: Some(&self.lengths) }
    }

    /// The targets view.
    pub fn targets(&self) -> Targets<'_, f32> {
        if self.class.is_empty() {
            Targets::Real(&self.real)
        } else {
            Targets::Class(&self.class)
        }
    }

    /// The elements the loss scores (the denominator of its mean) in each
    /// window: a last-step target counts in the window holding its
    /// sequence's last step, an every-step target in the window scoring its
    /// step; ignored classes do not count.
    pub fn scored(&self, ws: &[Window]) -> Vec<usize> {
        let per_step = !self.class.is_empty() && self.class.len() == self.b * self.t && self.t > 1;
        let width = self.real.len().checked_div(self.b).unwrap_or(0);
        ws.iter()
            .map(|w| {
                let scores = |s: usize| (w.score_from..w.end).contains(&s);
                (0..self.b)
                    .map(|r| {
                        let last = self.lengths[r].saturating_sub(1);
                        if per_step {
                            (w.score_from..w.end.min(last + 1))
                                .filter(|&s| self.class[r * self.t + s] != IGNORE_INDEX)
                                .count()
                        } else if self.class.is_empty() {
                            usize::from(scores(last)) * width
                        } else {
                            usize::from(scores(last) && self.class[r] != IGNORE_INDEX)
                        }
                    })
                    .sum()
            })
            .collect()
    }
}

/// Independent examples the Trainer can batch: it asks for their lengths
/// and for padded batches of any subset.
pub trait DataSource: Sync {
    /// Number of examples.
    fn len(&self) -> usize;
    /// Whether there is no example.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Length T_i of example `i` (at least 1).
    fn seq_len(&self, i: usize) -> usize;
    /// The examples `idx`, in that order, padded to `t` >= their lengths.
    fn batch(&self, idx: &[usize], t: usize) -> BatchBuf;
    /// Feeds every value to `eat` (a fingerprint, to check that the
    /// processes of a distributed run read the same data).
    fn feed(&self, eat: &mut dyn FnMut(u64));

    /// The longest of the examples `idx` (at least 1).
    fn max_len(&self, idx: &[usize]) -> usize {
        idx.iter().map(|&i| self.seq_len(i)).max().unwrap_or(1).max(1)
    }
}

/// What the Trainer trains or validates on.
#[derive(Clone, Copy)]
pub enum TrainData<'a> {
    /// Independent examples, shuffled and batched.
    Examples(&'a dyn DataSource),
    /// One token stream, cut into `batch` parallel streams, trained by
    /// truncated BPTT with the state carried from window to window.
    Stream(&'a [usize]),
}

impl TrainData<'_> {
    /// Whether there is nothing to train or validate on: no example, or a
    /// stream without one next-token target.
    pub fn is_empty(&self) -> bool {
        match self {
            TrainData::Examples(src) => src.is_empty(),
            TrainData::Stream(ids) => ids.len() < 2,
        }
    }

    /// FNV-1a over every value.
    pub fn fingerprint(&self) -> u64 {
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        let mut eat = |v: u64| {
            for b in v.to_le_bytes() {
                h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
            }
        };
        match self {
            TrainData::Examples(src) => src.feed(&mut eat),
            TrainData::Stream(ids) => ids.iter().for_each(|&v| eat(v as u64)),
        }
        h
    }
}

impl Examples {
    /// Real-valued examples from one padded array x [N, T, I] with lengths
    /// [N] (None: all T) and targets (one entry per example, or per step for
    /// `ClassSeq`). Steps past a length are dropped.
    pub fn from_arrays(
        x: &[f32],
        [n, t, i]: [usize; 3],
        lengths: Option<&[usize]>,
        targets: TargetSet,
    ) -> Result<Self> {
        check_len("x", x.len(), n * t * i, || format!("[N={n}, T={t}, I={i}]"))?;
        if let Some(l) = lengths {
            crate::network::check_lengths(l, n, t)?;
        }
        let len = |r: usize| lengths.map_or(t, |l| l[r]);
        let seqs = (0..n).map(|r| x[r * t * i..(r * t + len(r)) * i].to_vec()).collect();
        let ex = Examples { inputs: Inputs::Dense { width: i, seqs }, targets };
        ex.check()?;
        Ok(ex)
    }

    /// Checks that inputs and targets agree in count and lengths.
    pub fn check(&self) -> Result<()> {
        let n = self.len();
        let m = match &self.targets {
            TargetSet::Real { width, rows } => {
                if let Some(r) = rows.iter().position(|r| r.len() != *width) {
                    return Err(config_err("targets", r, format!("target row has not {width} values")));
                }
                rows.len()
            }
            TargetSet::Class(v) => v.len(),
            TargetSet::ClassSeq(v) => {
                if let Some(r) = (0..v.len().min(n)).find(|&r| v[r].len() != self.seq_len(r)) {
                    return Err(config_err("targets", r, "per-step targets must be as long as their sequence"));
                }
                v.len()
            }
        };
        check_len("targets", m, n, || format!("{n} examples"))?;
        if let Some(r) = (0..n).find(|&r| self.seq_len(r) == 0) {
            return Err(config_err("example", r, "has no step"));
        }
        Ok(())
    }

    /// The examples at `idx`, in that order.
    pub fn select(&self, idx: &[usize]) -> Examples {
        let inputs = match &self.inputs {
            Inputs::Dense { width, seqs } => {
                Inputs::Dense { width: *width, seqs: idx.iter().map(|&i| seqs[i].clone()).collect() }
            }
            Inputs::Tokens { seqs } => Inputs::Tokens { seqs: idx.iter().map(|&i| seqs[i].clone()).collect() },
        };
        let targets = match &self.targets {
            TargetSet::Real { width, rows } => {
                TargetSet::Real { width: *width, rows: idx.iter().map(|&i| rows[i].clone()).collect() }
            }
            TargetSet::Class(v) => TargetSet::Class(idx.iter().map(|&i| v[i]).collect()),
            TargetSet::ClassSeq(v) => TargetSet::ClassSeq(idx.iter().map(|&i| v[i].clone()).collect()),
        };
        Examples { inputs, targets }
    }
}

impl DataSource for Examples {
    fn len(&self) -> usize {
        match &self.inputs {
            Inputs::Dense { seqs, .. } => seqs.len(),
            Inputs::Tokens { seqs } => seqs.len(),
        }
    }

    fn seq_len(&self, i: usize) -> usize {
        match &self.inputs {
            Inputs::Dense { width, seqs } => seqs[i].len() / width,
            Inputs::Tokens { seqs } => seqs[i].len(),
        }
    }

    fn batch(&self, idx: &[usize], t: usize) -> BatchBuf {
        let b = idx.len();
        let lengths: Vec<usize> = idx.iter().map(|&i| self.seq_len(i)).collect();
        let mut out = BatchBuf { b, t, lengths, ..Default::default() };
        match &self.inputs {
            Inputs::Dense { width, seqs } => {
                out.x = vec![0.0; b * t * width];
                for (r, &i) in idx.iter().enumerate() {
                    out.x[r * t * width..r * t * width + seqs[i].len()].copy_from_slice(&seqs[i]);
                }
            }
            Inputs::Tokens { seqs } => {
                out.toks = vec![0; b * t];
                for (r, &i) in idx.iter().enumerate() {
                    out.toks[r * t..r * t + seqs[i].len()].copy_from_slice(&seqs[i]);
                }
            }
        }
        match &self.targets {
            TargetSet::Real { rows, .. } => out.real = idx.iter().flat_map(|&i| rows[i].iter().copied()).collect(),
            TargetSet::Class(v) => out.class = idx.iter().map(|&i| v[i]).collect(),
            TargetSet::ClassSeq(v) => {
                out.class = vec![IGNORE_INDEX; b * t];
                for (r, &i) in idx.iter().enumerate() {
                    out.class[r * t..r * t + v[i].len()].copy_from_slice(&v[i]);
                }
            }
        }
        out
    }

    fn feed(&self, eat: &mut dyn FnMut(u64)) {
        eat(self.len() as u64);
        match &self.inputs {
            Inputs::Dense { seqs, .. } => seqs.iter().flatten().for_each(|v| eat(u64::from(v.to_bits()))),
            Inputs::Tokens { seqs } => seqs.iter().flatten().for_each(|&v| eat(v as u64)),
        }
        match &self.targets {
            TargetSet::Real { rows, .. } => rows.iter().flatten().for_each(|v| eat(u64::from(v.to_bits()))),
            TargetSet::Class(v) => v.iter().for_each(|&c| eat(c as u64)),
            TargetSet::ClassSeq(v) => v.iter().flatten().for_each(|&c| eat(c as u64)),
        }
    }
}

/// Pads the examples `idx` of `src` into one batch as long as the longest.
pub fn make_batch(src: &dyn DataSource, idx: &[usize]) -> BatchBuf {
    src.batch(idx, src.max_len(idx))
}

/// Cuts a token stream into `b` parallel streams: inputs [B, L] and
/// next-token targets [B, L], L = (len - 1) / b.
pub fn stream_batch(ids: &[usize], b: usize) -> Result<BatchBuf> {
    let l = ids.len().saturating_sub(1) / b.max(1);
    if l == 0 {
        return Err(config_err(
            "batch",
            b,
            format!("a stream of {} tokens is too short for that many parallel streams", ids.len()),
        ));
    }
    let mut bb = BatchBuf { b, t: l, lengths: vec![l; b], ..Default::default() };
    for r in 0..b {
        bb.toks.extend_from_slice(&ids[r * l..r * l + l]);
        bb.class.extend(ids[r * l + 1..r * l + l + 1].iter().map(|&v| v as i64));
    }
    Ok(bb)
}

/// The parallel streams `rows` of a stream batch (a rank's share).
pub fn stream_rows(bb: &BatchBuf, rows: std::ops::Range<usize>) -> BatchBuf {
    let t = bb.t;
    BatchBuf {
        b: rows.len(),
        t,
        toks: bb.toks[rows.start * t..rows.end * t].to_vec(),
        class: bb.class[rows.start * t..rows.end * t].to_vec(),
        lengths: bb.lengths[rows.clone()].to_vec(),
        ..Default::default()
    }
}
