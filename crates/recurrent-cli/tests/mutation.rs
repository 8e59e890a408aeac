//! Deterministic mutation fuzzing inside `cargo test` (issue 18): a few
//! thousand mutated inputs per reader and parser, from the seed corpus of
//! `recurrent_cli::fuzz_targets` with a fixed seed, must never panic and
//! must fail, when they fail, with one line of at most 300 characters free
//! of control characters. The open-ended fuzzing is `fuzz/run.sh`.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use recurrent_cli::fuzz_targets::{run, scratch_dir, seeds, Target};

/// Mutated inputs per target.
const CASES: usize = 3000;

/// Bytes that mean something to one of the formats.
const INTERESTING: &[u8] = b"\x00\xff\x1b\x07\n\r\t ,;:@#\"'-+.eE0123456789?nN[]{}=TZ/\x08\x0c\x7f\x80\xc3";

/// One random mutation of `input` (possibly splicing in `other`).
fn mutate(rng: &mut ChaCha8Rng, input: &mut Vec<u8>, other: &[u8]) {
    let len = input.len();
    match rng.gen_range(0..9) {
        0 if len > 0 => {
            let i = rng.gen_range(0..len);
            input[i] ^= 1 << rng.gen_range(0..8);
        }
        1 if len > 0 => {
            let i = rng.gen_range(0..len);
            input[i] = INTERESTING[rng.gen_range(0..INTERESTING.len())];
        }
        2 => {
            let i = rng.gen_range(0..=len);
            let n = rng.gen_range(1..8);
            for _ in 0..n {
                input.insert(i, INTERESTING[rng.gen_range(0..INTERESTING.len())]);
            }
        }
        3 if len > 0 => {
            let a = rng.gen_range(0..len);
            let b = rng.gen_range(a..=len.min(a + 16));
            input.drain(a..b);
        }
        4 if len > 0 => {
            // Duplicate a range, sometimes many times (long lines, many fields).
            let a = rng.gen_range(0..len);
            let b = rng.gen_range(a..=len.min(a + 32));
            let piece = input[a..b].to_vec();
            let times = if rng.gen_bool(0.1) { rng.gen_range(100..2000) } else { rng.gen_range(1..4) };
            for _ in 0..times {
                input.splice(b..b, piece.iter().copied());
            }
        }
        5 if !other.is_empty() => {
            let a = rng.gen_range(0..other.len());
            let b = rng.gen_range(a..=other.len());
            let at = rng.gen_range(0..=len);
            input.splice(at..at, other[a..b].iter().copied());
        }
        6 if len > 0 => input.truncate(rng.gen_range(0..len)),
        7 if len >= 4 => {
            // A big-endian u32 or u64 (IDX dimensions, safetensors header length) set to an edge value.
            let i = rng.gen_range(0..len - 3);
            let v: u32 = [0, 1, 0xff, 0xffff, 0x7fff_ffff, 0xffff_ffff, 28, 60000][rng.gen_range(0..8)];
            input[i..i + 4].copy_from_slice(&v.to_be_bytes());
        }
        _ if len > 0 => {
            // A digit run replaced by a huge or odd number.
            let i = rng.gen_range(0..len);
            let n = ["1e308", "-1e309", "NaN", "inf", "18446744073709551616", "0", "-1", "1e-400"];
            let pick = n[rng.gen_range(0..n.len())];
            input.splice(i..i, pick.bytes());
        }
        _ => input.push(INTERESTING[rng.gen_range(0..INTERESTING.len())]),
    }
}

#[test]
fn mutated_inputs_never_panic_and_fail_with_one_short_clean_line() {
    let dir = scratch_dir();
    let mut failures = Vec::new();
    for (t, target) in Target::ALL.into_iter().enumerate() {
        let corpus = seeds(target);
        let mut rng = ChaCha8Rng::seed_from_u64(18 + t as u64);
        for case in 0..CASES {
            let mut input = corpus[case % corpus.len()].clone();
            let other = &corpus[rng.gen_range(0..corpus.len())];
            for _ in 0..rng.gen_range(1..6) {
                mutate(&mut rng, &mut input, other);
            }
            let outcome = std::panic::catch_unwind(|| run(target, &input, &dir));
            let problem = match outcome {
                Ok(Ok(())) => continue,
                Ok(Err(breach)) => breach,
                Err(panic) => format!(
                    "panic: {}",
                    panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default()
                ),
            };
            let shown: String = String::from_utf8_lossy(&input).chars().take(200).collect();
            failures.push(format!("{} case {case}: {problem}\n  input: {shown:?}", target.name()));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        failures.is_empty(),
        "{} failures, first ones:\n{}",
        failures.len(),
        failures[..failures.len().min(10)].join("\n")
    );
}

#[test]
fn every_seed_is_read_without_error() {
    let dir = scratch_dir().join("seeds");
    std::fs::create_dir_all(&dir).unwrap();
    for target in Target::ALL {
        for (i, seed) in seeds(target).iter().enumerate() {
            let path = dir.join(format!("{}-{i}", target.name()));
            std::fs::write(&path, seed).unwrap();
            assert_eq!(run(target, seed, &dir), Ok(()), "{} seed {i}", target.name());
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Writes the seed corpus of the cargo-fuzz harness (`fuzz/corpus/<target>/`):
/// `cargo test --release -p recurrent-cli --test mutation -- --ignored`.
#[test]
#[ignore]
fn write_fuzz_seed_corpus() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
    for target in Target::ALL {
        let dir = root.join(target.name());
        std::fs::create_dir_all(&dir).unwrap();
        for (i, seed) in seeds(target).iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i}")), seed).unwrap();
        }
    }
}
