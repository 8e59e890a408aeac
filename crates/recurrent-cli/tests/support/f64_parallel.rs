//! Data-parallel training through the library in f64 (the trainer behind
//! `recurrent train` is f32): each rank takes its contiguous shard of a fixed
//! batch of 7 ragged sequences, weights the gradient of its shard's mean loss
//! by its share of the scored elements, and one allreduce sums the shares
//! before the same clipping and Adam step on every rank.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use recurrent::distributed::{shard, Comm};
use recurrent::optim::{clip_grad_norm, Optimizer, OptimizerKind};
use recurrent::{Batch, CellKind, HeadKind, InitConfig, LossKind, Model, ModelConfig, RnnConfig, SeqInput, Targets};

/// The parameters after 5 steps on `comm`'s ranks.
pub fn train_f64(comm: &dyn Comm) -> Vec<f64> {
    let rnn = RnnConfig {
        cell: CellKind::Lstm,
        input_size: 3,
        hidden_size: 6,
        num_layers: 2,
        bidirectional: false,
        bias: true,
        dropout: 0.0,
    };
    let cfg = ModelConfig { rnn, vocab: None, head: HeadKind::Last, out_size: 2, loss: LossKind::Mse };
    let mut model = Model::<f64>::new(cfg, &InitConfig::default(), &mut ChaCha8Rng::seed_from_u64(3)).unwrap();
    // Every rank starts from rank 0's parameters.
    comm.broadcast_f64(0, &mut model.params);
    let mut opt = Optimizer::new(OptimizerKind::default_for("adam", 1e-2).unwrap(), model.num_params()).unwrap();
    let (b, t, i, o) = (7, 9, 3, 2);
    let x: Vec<f64> = (0..b * t * i).map(|k| (k * 37 % 101) as f64 / 50.0 - 1.0).collect(); // [B, T, I]
    let y: Vec<f64> = (0..b * o).map(|k| (k as f64 * 0.3).sin()).collect(); // [B, O]
    let lengths: Vec<usize> = (0..b).map(|r| 3 + (r * 5) % 7).collect(); // [B], 3..=9
    let part = shard(b, comm.rank(), comm.size());
    let n = part.len();
    let mut grads = vec![0.0; model.num_params()];
    let mut sum = vec![0.0; model.num_params()];
    for _ in 0..5 {
        grads.fill(0.0);
        if n > 0 {
            let batch = Batch {
                input: SeqInput::Dense(&x[part.start * t * i..part.end * t * i]),
                batch: n,
                seq_len: t,
                batch_first: true,
                lengths: Some(&lengths[part.clone()]),
            };
            let ys = Targets::Real(&y[part.start * o..part.end * o]);
            model.loss_and_grad::<ChaCha8Rng>(&batch, ys, None, &mut grads, None).unwrap();
            // MSE on a last-step head scores O elements per sequence: the share is n / B.
            let w = n as f64 / b as f64;
            grads.iter_mut().for_each(|g| *g *= w);
        }
        comm.allreduce_sum_f64(&grads, &mut sum);
        clip_grad_norm(&mut sum, 0.5);
        opt.step(&mut model.params, &sum).unwrap();
    }
    model.params
}

/// max |a - b| / max |a|.
pub fn rel_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = a.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    a.iter().zip(b).fold(0.0f64, |m, (x, y)| m.max((x - y).abs())) / scale
}
