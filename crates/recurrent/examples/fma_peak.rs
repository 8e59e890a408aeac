//! The machine's floating-point ceiling for the roofline in docs/performance.md:
//! twelve independent chains of 256-bit fused multiply-adds (enough to cover
//! the FMA latency on two pipes), f32, one thread per core asked for.
//! `cargo run --release --example fma_peak [threads]`: prints GFLOP/s per
//! thread and their sum. Needs AVX2 + FMA (says so otherwise).

use std::time::Instant;

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn chains(n: u64) -> f32 {
    use std::arch::x86_64::*;
    let (x, y) = (_mm256_set1_ps(1.000_000_1), _mm256_set1_ps(0.999_999));
    let mut a: [__m256; 12] = std::array::from_fn(|i| _mm256_set1_ps(i as f32));
    for _ in 0..n {
        for v in a.iter_mut() {
            *v = _mm256_fmadd_ps(*v, x, y);
        }
    }
    // Use the result so the loop is not removed.
    a.iter().map(|v| _mm256_cvtss_f32(*v)).sum()
}

fn main() {
    #[cfg(target_arch = "x86_64")]
    {
        if !(std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")) {
            eprintln!("this CPU has no AVX2 + FMA");
            std::process::exit(2);
        }
        let threads: usize = std::env::args().nth(1).map(|s| s.parse().expect("threads")).unwrap_or(1);
        let n = 300_000_000u64;
        let per: Vec<f64> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..threads)
                .map(|_| {
                    s.spawn(move || {
                        let t = Instant::now();
                        // SAFETY: AVX2 and FMA were detected above.
                        let r = unsafe { chains(n) };
                        std::hint::black_box(r);
                        (n * 12 * 16) as f64 / t.elapsed().as_secs_f64() / 1e9
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().expect("thread")).collect()
        });
        let list: Vec<String> = per.iter().map(|g| format!("{g:.1}")).collect();
        println!("FMA peak, {threads} thread(s): {} GFLOP/s (sum {:.1})", list.join(" + "), per.iter().sum::<f64>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    eprintln!("fma_peak measures x86-64 AVX2 + FMA only");
}
