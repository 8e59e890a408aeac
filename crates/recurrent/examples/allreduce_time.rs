//! Times the one collective of a data-parallel training step: the allreduce
//! (sum) of the flat f32 gradient buffer, P parameters + 2 (loss share and
//! failure flag), so 4 (P + 2) bytes per rank. Run it where you will train to
//! see what the network costs per step:
//!
//! ```sh
//! cargo build --release --features mpi --example allreduce_time
//! mpirun -n 2 target/release/examples/allreduce_time                 # S, M, L LSTM sizes
//! mpirun -n 8 --hostfile hosts target/release/examples/allreduce_time 1000000
//! ```
//!
//! Prints one JSON line per size (rank 0): parameters, bytes, ranks, the mean
//! time over the ranks and the repetitions, in milliseconds.

use recurrent::distributed::{Comm, MpiComm};
use std::time::Instant;

fn main() {
    let comm = MpiComm::init().expect("MPI initialisation");
    let args: Vec<usize> = std::env::args().skip(1).map(|a| a.parse().expect("a parameter count")).collect();
    // LSTM + 10-output head of the shared benchmark configurations S, M, L (docs/performance.md).
    let sizes = if args.is_empty() { vec![84_234, 858_634, 5_261_322] } else { args };
    for p in sizes {
        let send = vec![1.0f32; p + 2];
        let mut recv = vec![0.0f32; p + 2];
        for _ in 0..3 {
            comm.allreduce_sum_f32(&send, &mut recv);
        }
        // Enough repetitions for about half a second at 1 GB/s, at least 10.
        let reps = (500_000_000 / (4 * (p + 2))).clamp(10, 2000);
        let t = Instant::now();
        for _ in 0..reps {
            comm.allreduce_sum_f32(&send, &mut recv);
        }
        let mine = [t.elapsed().as_secs_f64() / reps as f64];
        let mut total = [0.0f64];
        comm.allreduce_sum_f64(&mine, &mut total);
        if comm.rank() == 0 {
            println!(
                "{{\"params\": {p}, \"bytes\": {}, \"ranks\": {}, \"reps\": {reps}, \"ms\": {:.4}}}",
                4 * (p + 2),
                comm.size(),
                1e3 * total[0] / comm.size() as f64
            );
        }
    }
}
