//! Times the per-step products of the benchmark configurations three ways:
//! the general GEMM (matrixmultiply, which packs B on every call), the
//! pre-packed kernel (`gemm_packed`, B packed once), and the cost of packing.
//! `cargo run --release --example packed_gemm [threads]`; used for docs/performance.md.

use recurrent::linalg::{gemm, gemm_packed, Packed, Tr};
use std::time::Instant;

/// The fastest of many timed calls (at least `reps`, about 0.3 s in all): on a
/// shared VM the minimum is the figure least disturbed by other tenants.
fn time(mut f: impl FnMut(), reps: usize) -> f64 {
    f();
    let mut best = f64::INFINITY;
    let start = Instant::now();
    let mut done = 0;
    while done < reps.max(3) || start.elapsed().as_secs_f64() < 0.3 {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed().as_secs_f64());
        done += 1;
    }
    best
}

fn main() {
    let threads: usize = std::env::args().nth(1).map(|s| s.parse().expect("threads")).unwrap_or(1);
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    println!("threads {threads}");
    println!("{:>22} {:>10} {:>10} {:>10} {:>9}", "m x k x n (op)", "gemm us", "packed us", "pack us", "GFLOP/s");
    // (what, m, k, n): forward h W_hhᵀ is [B, H] x [H, G*H]; backward dgh W_hh is [B, G*H] x [G*H, H].
    let shapes = [
        ("S lstm fwd", 32, 128, 512),
        ("S lstm bwd", 32, 512, 128),
        ("M lstm fwd", 64, 256, 1024),
        ("M lstm bwd", 64, 1024, 256),
        ("L lstm fwd", 64, 1024, 4096),
        ("L lstm bwd", 64, 4096, 1024),
        ("LM lstm fwd", 32, 512, 2048),
        ("LM lstm bwd", 32, 2048, 512),
        ("stream lstm hh", 1, 256, 1024),
        ("stream lstm ih", 1, 64, 1024),
    ];
    pool.install(|| {
        for (what, m, k, n) in shapes {
            let a: Vec<f32> = (0..m * k).map(|i| ((i * 7 % 13) as f32 - 6.0) * 0.01).collect();
            let w: Vec<f32> = (0..k * n).map(|i| ((i * 5 % 11) as f32 - 5.0) * 0.01).collect();
            let mut c = vec![0.0f32; m * n];
            let reps = (2e8 / (2.0 * (m * k * n) as f64)).clamp(10.0, 20000.0) as usize;
            // The weights are stored [n, k] (PyTorch's [G*H, H]) and used transposed, as in the forward.
            let t_gemm = time(|| gemm(m, k, n, 1.0, &a, Tr::N, &w, Tr::T, 0.0, &mut c), reps);
            let mut p = Packed::new();
            let t_pack = time(|| p.pack(k, n, &w, Tr::T), (reps / 10).max(3));
            let t_packed = time(|| gemm_packed(m, &a, &p, 0.0, &mut c), reps);
            let flops = 2.0 * (m * k * n) as f64;
            println!(
                "{what:>14} {m:>3}x{k:>4}x{n:>4} {:>10.2} {:>10.2} {:>10.2} {:>9.1}",
                t_gemm * 1e6,
                t_packed * 1e6,
                t_pack * 1e6,
                flops / t_packed / 1e9
            );
        }
        // The weight-gradient products of the backward pass: dW = dGᵀ X over all T*B rows,
        // with dG [T*B, G*H] stored as is and used transposed (matrixmultiply only).
        println!("{:>22} {:>10} {:>10}", "m x k x n (Aᵀ)", "gemm us", "GFLOP/s");
        for (what, m, k, n) in [
            ("S dW_hh", 512, 1600, 128),
            ("M dW_hh", 1024, 6400, 256),
            ("L dW_hh", 4096, 3200, 1024),
            ("LM dW_hh", 2048, 3200, 512),
        ] {
            let a: Vec<f32> = (0..m * k).map(|i| ((i * 7 % 13) as f32 - 6.0) * 0.01).collect();
            let x: Vec<f32> = (0..k * n).map(|i| ((i * 5 % 11) as f32 - 5.0) * 0.01).collect();
            let mut c = vec![0.0f32; m * n];
            let reps = (2e8 / (2.0 * (m * k * n) as f64)).clamp(3.0, 2000.0) as usize;
            let t = time(|| gemm(m, k, n, 1.0, &a, Tr::T, &x, Tr::N, 1.0, &mut c), reps);
            println!("{what:>10} {m:>4}x{k:>4}x{n:>4} {:>10.1} {:>10.1}", t * 1e6, 2.0 * (m * k * n) as f64 / t / 1e9);
        }
        // Matrix-vector products as a stream makes them, back to back: the mean
        // over many calls (the fastest single call above often finds the weights
        // still in L2 from the call before).
        println!("{:>22} {:>10} {:>10}", "1 x k x n (back to back)", "mean us", "GB/s");
        for (what, k, n) in [("28 KiB", 224, 32), ("256 KiB", 256, 256), ("1 MiB", 256, 1024), ("1.25 MiB", 320, 1024)]
        {
            let w: Vec<f32> = (0..k * n).map(|i| ((i * 5 % 11) as f32 - 5.0) * 0.01).collect();
            let mut p = Packed::new();
            p.pack(k, n, &w, Tr::T);
            let (x, mut c) = (vec![0.1f32; k], vec![0.0f32; n]);
            let calls = (1usize << 31) / (k * n * 4).max(1 << 16);
            gemm_packed(1, &x, &p, 0.0, &mut c);
            let t = Instant::now();
            for _ in 0..calls {
                gemm_packed(1, &x, &p, 0.0, &mut c);
            }
            let dt = t.elapsed().as_secs_f64() / calls as f64;
            println!("{what:>10} 1x{k:>4}x{n:>4} {:>10.2} {:>10.1}", dt * 1e6, (k * n * 4) as f64 / dt / 1e9);
        }
        // Peak: a large square product (the roofline's compute ceiling).
        let s = 1536;
        let a: Vec<f32> = (0..s * s).map(|i| ((i * 7 % 13) as f32 - 6.0) * 0.01).collect();
        let mut c = vec![0.0f32; s * s];
        let t = time(|| gemm(s, s, s, 1.0, &a, Tr::N, &a, Tr::N, 0.0, &mut c), 3);
        let mut p = Packed::new();
        p.pack(s, s, &a, Tr::N);
        let tp = time(|| gemm_packed(s, &a, &p, 0.0, &mut c), 3);
        let f = 2.0 * (s * s * s) as f64;
        println!("peak {s}^3: matrixmultiply {:.1} GFLOP/s, packed kernel {:.1} GFLOP/s", f / t / 1e9, f / tp / 1e9);
    });
}
