//! A checkpoint written by PyTorch (tools/make_checkpoint_fixture.py: a
//! 2-layer GRU trained in PyTorch, and a bidirectional LSTM) loads in
//! recurrent and reproduces PyTorch's forecasts.

use std::path::Path;

fn compare(ckpt: &str, expected: &str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../recurrent/tests/fixtures/torch_ckpt");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_recurrent"))
        .args([
            "predict",
            "--checkpoint",
            dir.join(ckpt).to_str().unwrap(),
            "--data",
            dir.join("input.csv").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let got = String::from_utf8(o.stdout).unwrap();
    let want = std::fs::read_to_string(dir.join(expected)).unwrap();
    let (gl, wl): (Vec<&str>, Vec<&str>) = (got.lines().collect(), want.lines().collect());
    assert_eq!(gl.len(), wl.len());
    assert_eq!(gl[0], wl[0], "header");
    for (g, w) in gl[1..].iter().zip(&wl[1..]) {
        let (gf, wf): (Vec<&str>, Vec<&str>) = (g.split(',').collect(), w.split(',').collect());
        assert_eq!(gf[0], wf[0], "date column");
        for (a, b) in gf[1..].iter().zip(&wf[1..]) {
            let (a, b): (f64, f64) = (a.parse().unwrap(), b.parse().unwrap());
            // f32 inference against PyTorch's float64 evaluation of the same f32 weights.
            assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "{ckpt}: {a} vs {b}");
        }
    }
}

#[test]
fn pytorch_gru_checkpoint_reproduces_pytorch_forecasts() {
    compare("model.safetensors", "expected.csv");
}

#[test]
fn pytorch_bidirectional_lstm_checkpoint_reproduces_pytorch_forecasts() {
    compare("lstm_bidir.safetensors", "lstm_bidir_expected.csv");
}
