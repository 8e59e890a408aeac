//! Data-parallel training across processes (Horovod-style): every process
//! ("rank") holds the whole model, computes the gradient of its own share of
//! each batch, and one allreduce over the flat gradient buffer sums the shares
//! before the same optimizer step runs everywhere.
//!
//! The trainer talks to the other ranks only through [`Comm`]. [`Single`] is
//! the one-process implementation: every collective is the identity, so a run
//! without MPI takes exactly the code path (and gets exactly the numbers) it
//! always did. [`ThreadComm`] runs ranks as threads of one process (the
//! tests use it to check the protocol without MPI). With the cargo feature
//! `mpi`, `MpiComm` implements it over MPI_COMM_WORLD (rsmpi over the
//! system's Open MPI or MPICH); all MPI code is in this module.
//!
//! Protocol rules the trainer follows, so that no rank can wait forever on a
//! collective another rank never reaches:
//! - every rank runs the same sequence of collectives (the number of
//!   gradient updates per batch depends only on the global batch);
//! - whatever can fail on one rank only (reading data, one rank's shard,
//!   rank 0's files) ends in an agreement ([`agree`], or the failure flag
//!   carried in the gradient allreduce by [`StepReducer`]): if any rank
//!   failed, all of them return the error of the lowest failing rank.

use crate::error::{Error, Result};
use std::ops::Range;

/// The collectives data-parallel training needs. Every rank calls the same
/// method in the same order with buffers of the same length. The ranks stay
/// identical only if every rank receives bitwise the same sums: MPI's
/// allreduce gives that (Open MPI and MPICH reduce each element in one order
/// and share the result, or combine pairs commutatively), as does `ThreadComm`.
pub trait Comm: Sync {
    /// This process's rank, 0..size.
    fn rank(&self) -> usize;
    /// Number of processes.
    fn size(&self) -> usize;
    /// Processes on this host (to share its cores between them).
    fn local_size(&self) -> usize;
    /// `recv` = element-wise sum of every rank's `send` (same length everywhere).
    fn allreduce_sum_f32(&self, send: &[f32], recv: &mut [f32]);
    /// As `allreduce_sum_f32`, in f64 (metric sums, flags, f64 gradients).
    fn allreduce_sum_f64(&self, send: &[f64], recv: &mut [f64]);
    /// Overwrites `buf` with rank `root`'s `buf` (same length everywhere).
    fn broadcast_f32(&self, root: usize, buf: &mut [f32]);
    /// As `broadcast_f32`, in f64.
    fn broadcast_f64(&self, root: usize, buf: &mut [f64]);
    /// As `broadcast_f32`, for bytes.
    fn broadcast_u8(&self, root: usize, buf: &mut [u8]);
}

/// One process: every collective is the identity.
#[derive(Clone, Copy, Debug, Default)]
pub struct Single;

impl Comm for Single {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn local_size(&self) -> usize {
        1
    }
    fn allreduce_sum_f32(&self, send: &[f32], recv: &mut [f32]) {
        recv.copy_from_slice(send);
    }
    fn allreduce_sum_f64(&self, send: &[f64], recv: &mut [f64]) {
        recv.copy_from_slice(send);
    }
    fn broadcast_f32(&self, _root: usize, _buf: &mut [f32]) {}
    fn broadcast_f64(&self, _root: usize, _buf: &mut [f64]) {}
    fn broadcast_u8(&self, _root: usize, _buf: &mut [u8]) {}
}

/// Ranks as threads of one process, exchanging through shared memory: the
/// whole protocol without MPI (the tests run data-parallel training with it
/// in the default build). Make one with [`ThreadComm::group`] and move each
/// member into its own thread.
pub struct ThreadComm {
    rank: usize,
    shared: std::sync::Arc<ThreadShared>,
}

struct ThreadShared {
    size: usize,
    barrier: std::sync::Barrier,
    // [size] slots: what each rank puts in, read by all after a barrier.
    slots: std::sync::Mutex<Vec<Vec<u8>>>,
}

impl ThreadComm {
    /// The `size` members of one group, rank 0 first.
    pub fn group(size: usize) -> Vec<ThreadComm> {
        let shared = std::sync::Arc::new(ThreadShared {
            size,
            barrier: std::sync::Barrier::new(size),
            slots: std::sync::Mutex::new(vec![Vec::new(); size]),
        });
        (0..size).map(|rank| ThreadComm { rank, shared: shared.clone() }).collect()
    }

    /// Every rank's bytes (same call on all ranks).
    fn exchange(&self, mine: Vec<u8>) -> Vec<Vec<u8>> {
        let sh = &self.shared;
        sh.slots.lock().unwrap_or_else(|e| e.into_inner())[self.rank] = mine;
        sh.barrier.wait();
        let all = sh.slots.lock().unwrap_or_else(|e| e.into_inner()).clone();
        // Nobody writes the next round before everyone has read this one.
        sh.barrier.wait();
        all
    }
}

impl Comm for ThreadComm {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.shared.size
    }
    fn local_size(&self) -> usize {
        self.shared.size
    }
    fn allreduce_sum_f32(&self, send: &[f32], recv: &mut [f32]) {
        let all = self.exchange(send.iter().flat_map(|v| v.to_le_bytes()).collect());
        for (k, r) in recv.iter_mut().enumerate() {
            // Summed in rank order (in f32, as MPI sums f32).
            *r = all.iter().map(|b| f32::from_le_bytes(b[4 * k..4 * k + 4].try_into().expect("4 bytes"))).sum();
        }
    }
    fn allreduce_sum_f64(&self, send: &[f64], recv: &mut [f64]) {
        let all = self.exchange(send.iter().flat_map(|v| v.to_le_bytes()).collect());
        for (k, r) in recv.iter_mut().enumerate() {
            *r = all.iter().map(|b| f64::from_le_bytes(b[8 * k..8 * k + 8].try_into().expect("8 bytes"))).sum();
        }
    }
    fn broadcast_f32(&self, root: usize, buf: &mut [f32]) {
        let all = self.exchange(buf.iter().flat_map(|v| v.to_le_bytes()).collect());
        for (k, v) in buf.iter_mut().enumerate() {
            *v = f32::from_le_bytes(all[root][4 * k..4 * k + 4].try_into().expect("4 bytes"));
        }
    }
    fn broadcast_f64(&self, root: usize, buf: &mut [f64]) {
        let all = self.exchange(buf.iter().flat_map(|v| v.to_le_bytes()).collect());
        for (k, v) in buf.iter_mut().enumerate() {
            *v = f64::from_le_bytes(all[root][8 * k..8 * k + 8].try_into().expect("8 bytes"));
        }
    }
    fn broadcast_u8(&self, root: usize, buf: &mut [u8]) {
        let all = self.exchange(buf.to_vec());
        buf.copy_from_slice(&all[root]);
    }
}

/// The items of `0..n` that rank `rank` of `size` takes: contiguous slices in
/// rank order whose sizes differ by at most one (the first `n % size` ranks
/// take one more). A rank's slice is empty when `n < size`.
pub fn shard(n: usize, rank: usize, size: usize) -> Range<usize> {
    let (q, r) = (n / size, n % size);
    let start = rank * q + rank.min(r);
    start..start + q + usize::from(rank < r)
}

/// Rank `root`'s bytes on every rank (lengths may differ before the call).
pub fn broadcast_bytes(comm: &dyn Comm, root: usize, bytes: &mut Vec<u8>) {
    let mut len = (bytes.len() as u64).to_le_bytes();
    comm.broadcast_u8(root, &mut len);
    bytes.resize(u64::from_le_bytes(len) as usize, 0);
    comm.broadcast_u8(root, bytes);
}

/// Makes every rank agree on an outcome that only some ranks may have
/// reached: when no rank failed, each keeps its own `Ok`; when any failed,
/// every rank returns the error of the lowest failing rank (as
/// `Error::Rank`). One process: `local` unchanged.
pub fn agree<T>(comm: &dyn Comm, local: Result<T>) -> Result<T> {
    if comm.size() == 1 {
        return local;
    }
    // [size]: 1 at the index of each failing rank.
    let mut flags = vec![0.0f64; comm.size()];
    flags[comm.rank()] = f64::from(u8::from(local.is_err()));
    let mut all = vec![0.0f64; comm.size()];
    comm.allreduce_sum_f64(&flags, &mut all);
    match all.iter().position(|&f| f > 0.0) {
        None => local,
        Some(root) => Err(failure_from(comm, root, local.err())),
    }
}

/// The error of rank `root` (which failed with `local`), sent to every rank.
fn failure_from(comm: &dyn Comm, root: usize, local: Option<Error>) -> Error {
    // [user flag, message bytes...]
    let mut bytes = Vec::new();
    if comm.rank() == root {
        let e = local.expect("the root of a failure is a failing rank");
        let (user, message) = match e {
            // Already agreed once (a nested agreement): keep the original words.
            Error::Rank { message, user, .. } => (user, message),
            e => (e.is_user_error(), e.to_string()),
        };
        bytes.push(u8::from(user));
        bytes.extend_from_slice(message.as_bytes());
    }
    broadcast_bytes(comm, root, &mut bytes);
    let user = bytes.first().is_some_and(|&b| b == 1);
    let message = String::from_utf8_lossy(bytes.get(1..).unwrap_or_default()).into_owned();
    Error::Rank { rank: root, message, user }
}

/// The gradient allreduce of one optimizer step, with the failure agreement
/// riding along: the wire buffer is [P gradients, loss share, failure count],
/// so a step costs exactly one allreduce of P + 2 floats.
#[derive(Debug, Default)]
pub struct StepReducer {
    send: Vec<f32>,
    recv: Vec<f32>,
}

impl StepReducer {
    /// A reducer (buffers grow on first use).
    pub fn new() -> Self {
        Self::default()
    }

    /// Sums `grads` (`[P]`, this rank's share, already weighted) and `loss`
    /// (its weighted loss) over all ranks, in place; returns the summed loss.
    /// One process: returns `loss`, `grads` untouched.
    pub fn reduce(&mut self, comm: &dyn Comm, grads: &mut [f32], loss: f64) -> Result<f64> {
        if comm.size() == 1 {
            return Ok(loss);
        }
        let p = grads.len();
        self.send.clear();
        self.send.extend_from_slice(grads);
        self.send.extend([loss as f32, 0.0]);
        self.recv.resize(p + 2, 0.0);
        comm.allreduce_sum_f32(&self.send, &mut self.recv);
        if self.recv[p + 1] > 0.0 {
            // Another rank failed in this step: learn whose error it was.
            return Err(failure_from(comm, lowest_failing(comm, false), None));
        }
        grads.copy_from_slice(&self.recv[..p]);
        Ok(f64::from(self.recv[p]))
    }

    /// This rank failed with `e` where the others expect a gradient
    /// allreduce of `p` values: takes part in it with the failure flag set and
    /// returns the agreed error. One process: `e` unchanged.
    pub fn fail(&mut self, comm: &dyn Comm, p: usize, e: Error) -> Error {
        if comm.size() == 1 {
            return e;
        }
        self.send.clear();
        self.send.resize(p + 2, 0.0);
        self.send[p + 1] = 1.0;
        self.recv.resize(p + 2, 0.0);
        comm.allreduce_sum_f32(&self.send, &mut self.recv);
        let root = lowest_failing(comm, true);
        failure_from(comm, root, Some(e))
    }
}

/// After a step in which some rank failed: the lowest failing rank.
fn lowest_failing(comm: &dyn Comm, failed: bool) -> usize {
    let mut flags = vec![0.0f64; comm.size()];
    flags[comm.rank()] = f64::from(u8::from(failed));
    let mut all = vec![0.0f64; comm.size()];
    comm.allreduce_sum_f64(&flags, &mut all);
    all.iter().position(|&f| f > 0.0).unwrap_or(0)
}

/// The rank count an MPI launcher (mpirun/mpiexec of Open MPI or MPICH)
/// announced to this process, if it started it.
pub fn launcher_size() -> Option<usize> {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE"].iter().find_map(|k| std::env::var(k).ok().and_then(|v| v.parse().ok()))
}

/// The rank an MPI launcher gave this process, if it started it (readable
/// before MPI is initialised, e.g. to keep the other ranks quiet about bad
/// command-line options).
pub fn launcher_rank() -> Option<usize> {
    ["OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK"]
        .iter()
        .find_map(|k| std::env::var(k).ok().and_then(|v| v.parse().ok()))
}

/// The communicator of this process: MPI's world when an MPI launcher started
/// it (feature `mpi`), else [`Single`]. Without the feature, being started as
/// one of several ranks is an error: the ranks would train independently and
/// overwrite each other's files.
pub fn from_environment() -> Result<Box<dyn Comm>> {
    #[cfg(feature = "mpi")]
    if launcher_size().is_some() || launcher_rank().is_some() {
        return Ok(Box::new(MpiComm::init()?));
    }
    #[cfg(not(feature = "mpi"))]
    if let Some(n) = launcher_size().filter(|&n| n > 1) {
        return Err(crate::error::config_err(
            "processes",
            n,
            "this recurrent was built without MPI support; rebuild it with `cargo build --release --features mpi`",
        ));
    }
    Ok(Box::new(Single))
}

#[cfg(feature = "mpi")]
pub use with_mpi::MpiComm;

#[cfg(feature = "mpi")]
mod with_mpi {
    use super::Comm;
    use crate::error::{config_err, Result};
    use mpi::collective::{CommunicatorCollectives, Root, SystemOperation};
    use mpi::environment::Universe;
    use mpi::topology::{Communicator, SimpleCommunicator};
    use mpi::Threading;

    /// MPI_COMM_WORLD. MPI is finalized when this is dropped.
    pub struct MpiComm {
        world: SimpleCommunicator,
        rank: usize,
        size: usize,
        local_size: usize,
        // Last field: dropped (MPI_Finalize) after the communicators.
        _universe: Universe,
    }

    // SAFETY: MPI is initialised with MPI_THREAD_SERIALIZED (checked in
    // `init`), which allows calls from any thread as long as no two run at
    // once; the trainer makes its collectives from one thread at a time (the
    // rayon workers only compute).
    unsafe impl Sync for MpiComm {}
    unsafe impl Send for MpiComm {}

    impl MpiComm {
        /// Initialises MPI (once per process) and wraps its world.
        pub fn init() -> Result<Self> {
            let (universe, threading) = mpi::initialize_with_threading(Threading::Serialized)
                .ok_or_else(|| config_err("mpi", "init", "MPI was already initialised in this process"))?;
            if !matches!(threading, Threading::Serialized | Threading::Multiple) {
                return Err(config_err(
                    "mpi",
                    format!("{threading:?}"),
                    "the MPI library does not allow calls from several threads (MPI_THREAD_SERIALIZED)",
                ));
            }
            let world = universe.world();
            let (rank, size) = (world.rank() as usize, world.size() as usize);
            let local_size = world.split_shared(world.rank()).size() as usize;
            Ok(MpiComm { world, rank, size, local_size, _universe: universe })
        }
    }

    impl Comm for MpiComm {
        fn rank(&self) -> usize {
            self.rank
        }
        fn size(&self) -> usize {
            self.size
        }
        fn local_size(&self) -> usize {
            self.local_size
        }
        fn allreduce_sum_f32(&self, send: &[f32], recv: &mut [f32]) {
            self.world.all_reduce_into(send, recv, SystemOperation::sum());
        }
        fn allreduce_sum_f64(&self, send: &[f64], recv: &mut [f64]) {
            self.world.all_reduce_into(send, recv, SystemOperation::sum());
        }
        fn broadcast_f32(&self, root: usize, buf: &mut [f32]) {
            self.world.process_at_rank(root as i32).broadcast_into(buf);
        }
        fn broadcast_f64(&self, root: usize, buf: &mut [f64]) {
            self.world.process_at_rank(root as i32).broadcast_into(buf);
        }
        fn broadcast_u8(&self, root: usize, buf: &mut [u8]) {
            self.world.process_at_rank(root as i32).broadcast_into(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_contiguous_and_balanced() {
        for n in 0..20 {
            for size in 1..6 {
                let parts: Vec<Range<usize>> = (0..size).map(|r| shard(n, r, size)).collect();
                assert_eq!(parts[0].start, 0);
                assert_eq!(parts[size - 1].end, n);
                for w in parts.windows(2) {
                    assert_eq!(w[0].end, w[1].start);
                    assert!(w[0].len() == w[1].len() || w[0].len() == w[1].len() + 1);
                }
            }
        }
        assert_eq!(shard(5, 0, 2), 0..3);
        assert_eq!(shard(5, 1, 2), 3..5);
        assert_eq!(shard(1, 1, 2), 1..1);
    }

    #[test]
    fn one_process_collectives_are_the_identity() {
        let e = crate::error::config_err("x", 1, "bad");
        assert_eq!(agree::<()>(&Single, Err(e.clone())), Err(e.clone()));
        let mut r = StepReducer::new();
        let mut g = vec![1.0f32, 2.0];
        assert_eq!(r.reduce(&Single, &mut g, 0.5), Ok(0.5));
        assert_eq!(g, vec![1.0, 2.0]);
        assert_eq!(r.fail(&Single, 2, e.clone()), e);
    }

    /// Runs `f(comm)` on each rank of a thread group; results in rank order.
    fn on_ranks<T: Send>(size: usize, f: impl Fn(&ThreadComm) -> T + Sync) -> Vec<T> {
        std::thread::scope(|s| {
            let handles: Vec<_> = ThreadComm::group(size).into_iter().map(|c| s.spawn(|| f(&{ c }))).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    }

    #[test]
    fn a_step_sums_gradients_and_losses() {
        let out = on_ranks(3, |c| {
            let mut g = vec![c.rank() as f32, 1.0];
            let loss = StepReducer::new().reduce(c, &mut g, 0.25).unwrap();
            (g, loss)
        });
        for (g, loss) in out {
            assert_eq!(g, vec![3.0, 3.0]);
            assert_eq!(loss, 0.75);
        }
    }

    #[test]
    fn a_rank_failing_in_a_step_stops_every_rank_with_its_message() {
        // Rank 2 fails in the second step, while ranks 0 and 1 wait in its allreduce.
        let out = on_ranks(3, |c| {
            let mut r = StepReducer::new();
            let mut g = vec![1.0f32; 4];
            r.reduce(c, &mut g, 0.0)?;
            if c.rank() == 2 {
                return Err(r.fail(c, 4, crate::error::data_err("part.csv", Some(7), "not a number")));
            }
            r.reduce(c, &mut g, 0.0).map(|_| ())
        });
        for e in out {
            let e = e.unwrap_err();
            assert_eq!(e.to_string(), "rank 2: part.csv:7: not a number");
            assert!(e.is_user_error());
        }
    }

    #[test]
    fn an_agreement_reports_the_lowest_failing_rank() {
        let out = on_ranks(4, |c| {
            let local: Result<usize> = match c.rank() {
                1 | 3 => Err(crate::error::config_err("x", c.rank(), "bad")),
                r => Ok(r),
            };
            agree(c, local)
        });
        for e in out {
            assert_eq!(e.unwrap_err().to_string(), "rank 1: invalid x = 1: bad");
        }
        // Nobody failed: each keeps its own value.
        assert_eq!(on_ranks(2, |c| agree(c, Ok(c.rank()))), vec![Ok(0), Ok(1)]);
        // Rank 0's own error keeps its words.
        let out = on_ranks(2, |c| {
            agree::<()>(c, if c.rank() == 0 { Err(crate::error::config_err("y", 0, "no")) } else { Ok(()) })
        });
        assert!(out.iter().all(|e| e.as_ref().unwrap_err().to_string() == "invalid y = 0: no"));
    }
}
