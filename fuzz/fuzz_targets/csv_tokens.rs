#![no_main]
//! Fuzz target `csv_tokens`: see `recurrent_cli::fuzz_targets`.

use libfuzzer_sys::fuzz_target;
use recurrent_cli::fuzz_targets::{run, scratch_dir, Target};
use std::path::PathBuf;
use std::sync::OnceLock;

static DIR: OnceLock<PathBuf> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let dir = DIR.get_or_init(scratch_dir);
    if let Err(breach) = run(Target::CsvTokens, data, dir) {
        panic!("{breach}");
    }
});
