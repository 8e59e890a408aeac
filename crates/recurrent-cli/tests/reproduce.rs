//! The reproduction suite's short settings as smoke tests: every run of
//! every experiment trains and its validation loss falls. Experiments that
//! read ../shared/data are skipped, with a message, when it is absent.

use recurrent_cli::reproduce::{run, EXPERIMENTS};
use std::path::Path;

#[test]
fn quick_suites_run_and_their_losses_fall() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data");
    let out = std::env::temp_dir().join(format!("recurrent-reproduce-{}", std::process::id()));
    for name in EXPERIMENTS {
        let needs_data = matches!(name, "smnist" | "charlm" | "sunspots");
        if needs_data && !data.exists() {
            eprintln!("skipping {name}: {} is absent", data.display());
            continue;
        }
        let results = run(name, true, &[], &out.join(name), &data, |_| {}).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!results.is_empty(), "{name}");
        for r in &results {
            assert!(
                r.best_val_loss < r.first_val_loss,
                "{name} {}: validation loss {} -> {}",
                r.variant,
                r.first_val_loss,
                r.best_val_loss
            );
            assert!(r.val.is_finite() && r.wall_s > 0.0);
        }
    }
    let _ = std::fs::remove_dir_all(&out);
}
