//! Peak memory of an online learner does not grow with the stream: a
//! counting allocator measures the peak heap in use while the learner runs
//! N steps, then while it runs 2N more; the second peak is no higher.

use recurrent::grad::online::{Estimator, OnlineLearner, DEFAULT_MEMORY_LIMIT};
use recurrent::optim::{Optimizer, OptimizerKind};
use recurrent::{CellKind, HeadKind, InitConfig, LossKind, Model, ModelConfig, RnnConfig, Targets};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;
static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = System.alloc(l);
        if !p.is_null() {
            let now = CURRENT.fetch_add(l.size(), Ordering::SeqCst) + l.size();
            PEAK.fetch_max(now, Ordering::SeqCst);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l);
        CURRENT.fetch_sub(l.size(), Ordering::SeqCst);
    }
}

#[global_allocator]
static A: Counting = Counting;

#[test]
fn a_stream_twice_as_long_uses_the_same_peak_memory() {
    use rand::SeedableRng;
    for method in [Estimator::Rtrl, Estimator::Uoro, Estimator::Snap1, Estimator::Snap2] {
        let cfg = ModelConfig {
            rnn: RnnConfig {
                cell: CellKind::Lstm,
                input_size: 3,
                hidden_size: 8,
                num_layers: 2,
                bidirectional: false,
                bias: true,
                dropout: 0.0,
            },
            vocab: None,
            head: HeadKind::Every,
            out_size: 1,
            loss: LossKind::Mse,
        };
        let model =
            Model::<f32>::new(cfg, &InitConfig::default(), &mut rand_chacha::ChaCha8Rng::seed_from_u64(1)).unwrap();
        let opt = Optimizer::new(OptimizerKind::default_for("adam", 1e-3).unwrap(), model.num_params()).unwrap();
        let mut l = OnlineLearner::new(model, opt, method, 4, 2, 0, DEFAULT_MEMORY_LIMIT).unwrap();
        let mut run = |n: usize| {
            for t in 0..n {
                let v = (t as f32 * 0.1).sin();
                l.step(&[v, -v, 0.5, v, v, 0.1], Some(Targets::Real(&[v, -v]))).unwrap();
            }
        };
        let base = CURRENT.load(Ordering::SeqCst);
        PEAK.store(base, Ordering::SeqCst);
        run(500);
        let first = PEAK.load(Ordering::SeqCst) - base;
        let after = CURRENT.load(Ordering::SeqCst);
        PEAK.store(after, Ordering::SeqCst);
        run(1000);
        let second = PEAK.load(Ordering::SeqCst) - base;
        assert_eq!(CURRENT.load(Ordering::SeqCst), after, "{method:?}: memory held grew over the stream");
        assert!(second <= first, "{method:?}: peak {first} bytes over 500 steps, {second} over 1000 more");
    }
}
