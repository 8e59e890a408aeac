//! Charts: PNG and SVG output, log scale, metrics files, forecasts, and the errors.
//!
//! Each test writes into its own folder under the system temp folder and removes it
//! at the end; set RECURRENT_PLOT_KEEP=1 to keep the charts for a look.

use std::fs;
use std::path::{Path, PathBuf};

use recurrent::Error;
use recurrent_cli::plot::{line_chart, plot_forecast, plot_forecast_xy, plot_metrics, Series};

/// A fresh, empty folder for one test.
struct TestDir(PathBuf);

impl TestDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("recurrent-plot-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        TestDir(dir)
    }
    fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
    /// Names of the files in the folder, sorted.
    fn files(&self) -> Vec<String> {
        let mut names: Vec<String> =
            fs::read_dir(&self.0).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if std::env::var_os("RECURRENT_PLOT_KEEP").is_some() {
            eprintln!("kept {}", self.0.display());
        } else {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

/// Width and height from a PNG's IHDR chunk, after checking the signature.
fn png_size(path: &Path) -> (u32, u32) {
    let bytes = fs::read(path).unwrap();
    assert!(bytes.len() > 33, "{} is too short for a PNG", path.display());
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{} lacks the PNG signature", path.display());
    assert_eq!(&bytes[12..16], b"IHDR", "first chunk of {} is not IHDR", path.display());
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    (be(&bytes[16..20]), be(&bytes[20..24]))
}

fn two_series() -> Vec<Series> {
    let xs: Vec<f64> = (0..50).map(|i| i as f64).collect();
    vec![
        Series::new("sine wave", xs.iter().map(|&x| (x, (x / 5.0).sin())).collect()),
        Series::new("cosine wave", xs.iter().map(|&x| (x, (x / 5.0).cos())).collect()),
    ]
}

fn assert_data_error(result: recurrent::Result<()>, needles: &[&str]) -> String {
    let err = result.expect_err("expected an error");
    assert!(matches!(err, Error::Data { .. }), "expected Error::Data, got {err:?}");
    let msg = err.to_string();
    for needle in needles {
        assert!(msg.contains(needle), "error {msg:?} should contain {needle:?}");
    }
    msg
}

#[test]
fn png_and_svg_are_both_written() {
    let dir = TestDir::new("formats");
    let series = two_series();
    let png = dir.path("waves.png");
    let svg = dir.path("waves.svg");
    line_chart(&png, "Two waves", "time step", "amplitude", &series, false).unwrap();
    line_chart(&svg, "Two waves", "time step", "amplitude", &series, false).unwrap();

    assert_eq!(png_size(&png), (900, 500));
    // A chart with text is well above a blank 900x500 PNG (a few KiB).
    assert!(fs::metadata(&png).unwrap().len() > 10_000);

    let text = fs::read_to_string(&svg).unwrap();
    assert!(text.contains("<svg"), "not an SVG: {}", &text[..text.len().min(200)]);
    assert!(text.contains("width=\"900\"") && text.contains("height=\"500\""), "SVG is not 900x500");
    for needle in ["Two waves", "time step", "amplitude", "sine wave", "cosine wave"] {
        assert!(text.contains(needle), "SVG lacks {needle:?}");
    }
    // Only the two charts: no temporary file left behind.
    assert_eq!(dir.files(), ["waves.png", "waves.svg"]);
}

#[test]
fn extension_case_is_ignored_and_existing_files_are_replaced() {
    let dir = TestDir::new("replace");
    let path = dir.path("chart.PNG");
    fs::write(&path, b"old contents").unwrap();
    line_chart(&path, "Replaced", "x", "y", &two_series(), false).unwrap();
    assert_eq!(png_size(&path), (900, 500));

    let svg = dir.path("chart.svg");
    line_chart(&svg, "First", "x", "y", &two_series(), false).unwrap();
    line_chart(&svg, "Second", "x", "y", &two_series(), false).unwrap();
    let text = fs::read_to_string(&svg).unwrap();
    assert!(text.contains("Second") && !text.contains("First"));
    assert_eq!(dir.files(), ["chart.PNG", "chart.svg"]);
}

#[test]
fn one_series_has_no_legend() {
    let dir = TestDir::new("legend");
    let svg = dir.path("one.svg");
    let series = vec![Series::new("lonely-series-name", vec![(0.0, 1.0), (1.0, 2.0), (2.0, 1.5)])];
    line_chart(&svg, "One line", "x", "y", &series, false).unwrap();
    let text = fs::read_to_string(&svg).unwrap();
    assert!(text.contains("One line"));
    assert!(!text.contains("lonely-series-name"), "a single series should not get a legend");
}

#[test]
fn log_scale_skips_non_positive_values() {
    let dir = TestDir::new("log");
    let loss: Vec<(f64, f64)> = (0..200).map(|i| (i as f64, 10.0 * (-(i as f64) / 20.0).exp())).collect();
    let mut with_bad = loss.clone();
    with_bad.extend([(200.0, 0.0), (201.0, -1.0), (202.0, f64::NAN), (f64::INFINITY, 1.0)]);
    let series = vec![Series::new("loss", with_bad), Series::new("floor", vec![(0.0, 1e-4), (199.0, 1e-4)])];
    for name in ["log.png", "log.svg"] {
        line_chart(&dir.path(name), "Log loss", "step", "loss", &series, true).unwrap();
    }
    assert_eq!(png_size(&dir.path("log.png")), (900, 500));
    let text = fs::read_to_string(dir.path("log.svg")).unwrap();
    assert!(text.contains("Log loss") && text.contains("floor"));

    // Nothing positive left: an error that says why.
    let bad = vec![Series::new("zeros", vec![(0.0, 0.0), (1.0, -2.0), (2.0, f64::NAN)])];
    let msg = assert_data_error(line_chart(&dir.path("none.png"), "t", "x", "y", &bad, true), &["none.png"]);
    assert!(msg.contains("log"), "{msg}");
    // The same data on a linear axis is fine (the NaN is skipped).
    line_chart(&dir.path("linear.png"), "t", "x", "y", &bad, false).unwrap();
    assert_eq!(dir.files(), ["linear.png", "log.png", "log.svg"]);
}

#[test]
fn awkward_data_still_draws() {
    let dir = TestDir::new("robust");
    let cases: Vec<(&str, Vec<Series>, bool)> = vec![
        ("single", vec![Series::new("one", vec![(3.0, 7.0)])], false),
        ("single-log", vec![Series::new("one", vec![(3.0, 7.0)])], true),
        ("origin", vec![Series::new("zero", vec![(0.0, 0.0)])], false),
        ("flat", vec![Series::new("flat", (0..10).map(|i| (i as f64, 2.5)).collect())], false),
        ("flat-zero", vec![Series::new("flat", (0..10).map(|i| (i as f64, 0.0)).collect())], false),
        ("huge", vec![Series::new("huge", vec![(-1e300, -1e300), (1e300, 1e300)])], false),
        ("limit", vec![Series::new("limit", vec![(-1e300, 1e300), (1e300, -1e300), (0.0, 1e300)])], false),
        // Beyond ±1e300 is skipped: only the middle point is drawn.
        ("extreme", vec![Series::new("max", vec![(f64::MIN, f64::MIN), (1.0, 2.0), (f64::MAX, f64::MAX)])], false),
        ("huge-log", vec![Series::new("span", vec![(0.0, 1e-150), (1.0, 1e150)])], true),
        ("beyond-log", vec![Series::new("span", vec![(0.0, 1e-300), (1.0, 1.0), (2.0, 1e300)])], true),
        ("narrow-log", vec![Series::new("flat loss", vec![(0.0, 0.30), (1.0, 0.33), (2.0, 0.31)])], true),
        ("decade-log", vec![Series::new("loss", vec![(0.0, 0.9), (1.0, 0.2), (2.0, 0.12)])], true),
        ("tiny-log", vec![Series::new("loss", vec![(0.0, 1e-3), (1.0, 1e-40)])], true),
        ("tiny-span", vec![Series::new("tiny", vec![(1e10, 1e10), (1e10 + 1e-5, 1e10 + 1e-5)])], false),
        (
            "tiny-at-huge",
            vec![Series::new("tiny", vec![(1e299, 1e299), (1.0000000000001e299, 1.0000000000001e299)])],
            false,
        ),
        ("subnormal", vec![Series::new("sub", vec![(0.0, 5e-324), (1.0, 1e-320)])], false),
        ("small", vec![Series::new("small", vec![(0.0, 1e-12), (1.0, 3e-12)])], false),
        ("one-empty", vec![Series::new("empty", vec![]), Series::new("some", vec![(0.0, 1.0), (1.0, 2.0)])], false),
    ];
    for (name, series, log_y) in cases {
        for ext in ["png", "svg"] {
            let path = dir.path(&format!("{name}.{ext}"));
            // Guard against a hang in the tick search: each chart gets 60 s.
            let (tx, rx) = std::sync::mpsc::channel();
            let (p, s) = (path.clone(), series.clone());
            std::thread::spawn(move || {
                let _ = tx.send(line_chart(&p, "awkward", "x", "y", &s, log_y));
            });
            rx.recv_timeout(std::time::Duration::from_secs(60))
                .unwrap_or_else(|e| panic!("{name}.{ext}: no result within 60 s ({e})"))
                .unwrap_or_else(|e| panic!("{name}.{ext}: {e}"));
            if ext == "png" {
                assert_eq!(png_size(&path), (900, 500), "{name}");
            } else {
                assert!(fs::read_to_string(&path).unwrap().contains("<svg"), "{name}");
            }
        }
    }
}

#[test]
fn empty_input_is_an_error() {
    let dir = TestDir::new("empty");
    assert_data_error(line_chart(&dir.path("a.png"), "t", "x", "y", &[], false), &["a.png", "no series"]);
    let empty = vec![Series::new("e", vec![]), Series::new("f", vec![])];
    assert_data_error(line_chart(&dir.path("b.svg"), "t", "x", "y", &empty, false), &["b.svg", "nothing to plot"]);
    let nan = vec![Series::new("nan", vec![(f64::NAN, 1.0), (1.0, f64::INFINITY), (f64::MAX, 0.0)])];
    assert_data_error(line_chart(&dir.path("c.png"), "t", "x", "y", &nan, false), &["c.png", "nothing to plot"]);
    assert_data_error(plot_forecast(&dir.path("d.png"), "t", &[], &[]), &["d.png"]);
    assert!(dir.files().is_empty(), "{:?}", dir.files());
}

#[test]
fn unknown_extension_is_an_error() {
    let dir = TestDir::new("ext");
    let series = two_series();
    assert_data_error(line_chart(&dir.path("chart.jpg"), "t", "x", "y", &series, false), &["chart.jpg", ".jpg"]);
    assert_data_error(line_chart(&dir.path("chart"), "t", "x", "y", &series, false), &["no extension"]);
    assert_data_error(plot_forecast(&dir.path("f.pdf"), "t", &[1.0], &[1.0]), &[".pdf"]);
    // A missing folder is reported, not panicked on.
    assert_data_error(line_chart(&dir.path("missing/chart.png"), "t", "x", "y", &series, false), &["does not exist"]);
    assert!(dir.files().is_empty(), "{:?}", dir.files());
}

#[test]
fn metrics_file_plots_train_and_validation_loss() {
    let dir = TestDir::new("metrics");
    let metrics = dir.path("metrics.jsonl");
    let mut text = String::new();
    for step in 1..=100 {
        let train = 2.0 / step as f64;
        if step % 10 == 0 {
            text.push_str(&format!("{{\"step\": {step}, \"train_loss\": {train}, \"val_loss\": {}}}\n", train * 1.3));
        } else {
            text.push_str(&format!(
                "{{\"step\": {step}, \"train_loss\": {train}, \"val_loss\": null, \"lr\": 0.01}}\n"
            ));
        }
    }
    text.push('\n'); // a blank line is fine
    fs::write(&metrics, &text).unwrap();

    plot_metrics(&metrics, &dir.path("loss.png")).unwrap();
    assert_eq!(png_size(&dir.path("loss.png")), (900, 500));
    plot_metrics(&metrics, &dir.path("loss.svg")).unwrap();
    let svg = fs::read_to_string(dir.path("loss.svg")).unwrap();
    for needle in ["<svg", "metrics.jsonl", "step", "loss", "train loss", "validation loss"] {
        assert!(svg.contains(needle), "SVG lacks {needle:?}");
    }

    // Only train loss: one series, still fine.
    let train_only = dir.path("train.jsonl");
    fs::write(&train_only, "{\"step\": 0, \"train_loss\": 1.0}\n{\"step\": 1, \"train_loss\": 0.5}\n").unwrap();
    plot_metrics(&train_only, &dir.path("train.svg")).unwrap();
}

#[test]
fn bad_metrics_lines_name_file_and_line() {
    let dir = TestDir::new("badmetrics");
    let out = dir.path("out.png");
    let cases = [
        ("not-json.jsonl", "{\"step\": 1, \"train_loss\": 1.0}\n{\"step\": 2, \"train_loss\": 0.9}\n{oops\n", ":3:"),
        ("no-step.jsonl", "{\"step\": 1, \"train_loss\": 1.0}\n\n{\"train_loss\": 0.9}\n", ":3:"),
        ("array.jsonl", "[1, 2]\n", ":1:"),
        ("text-loss.jsonl", "{\"step\": 1, \"train_loss\": 1.0}\n{\"step\": 2, \"val_loss\": \"low\"}\n", ":2:"),
        ("text-step.jsonl", "{\"step\": \"one\", \"train_loss\": 1.0}\n", ":1:"),
    ];
    for (name, body, line) in cases {
        let path = dir.path(name);
        fs::write(&path, body).unwrap();
        let err = plot_metrics(&path, &out).expect_err(name);
        match &err {
            Error::Data { path: p, line: Some(_), .. } => assert!(p.ends_with(name), "{err}"),
            other => panic!("{name}: expected Error::Data with a line, got {other:?}"),
        }
        let msg = err.to_string();
        assert!(msg.contains(&format!("{name}{line}")), "{name}: {msg:?} should contain {name}{line}");
    }
    // No loss at all, and a missing file: errors without a line.
    let no_loss = dir.path("no-loss.jsonl");
    fs::write(&no_loss, "{\"step\": 1, \"lr\": 0.1}\n").unwrap();
    assert_data_error(plot_metrics(&no_loss, &out), &["no-loss.jsonl", "train_loss"]);
    assert_data_error(plot_metrics(&dir.path("absent.jsonl"), &out), &["absent.jsonl"]);
    assert!(!out.exists());
}

#[test]
fn forecast_against_actual() {
    let dir = TestDir::new("forecast");
    let actual: Vec<f64> = (0..60).map(|i| (i as f64 / 6.0).sin()).collect();
    let mut forecast = vec![f64::NAN; 40];
    forecast.extend((40..60).map(|i| (i as f64 / 6.0).sin() + 0.1));
    plot_forecast(&dir.path("fc.png"), "Forecast vs actual", &actual, &forecast).unwrap();
    assert_eq!(png_size(&dir.path("fc.png")), (900, 500));
    plot_forecast(&dir.path("fc.svg"), "Forecast vs actual", &actual, &forecast).unwrap();
    let svg = fs::read_to_string(dir.path("fc.svg")).unwrap();
    for needle in ["Forecast vs actual", "actual", "forecast"] {
        assert!(svg.contains(needle), "SVG lacks {needle:?}");
    }

    let x: Vec<f64> = (0..60).map(|i| 1000.0 + 0.5 * i as f64).collect();
    plot_forecast_xy(&dir.path("xy.svg"), "With x", &x, &actual, &forecast).unwrap();
    let err = plot_forecast_xy(&dir.path("bad.svg"), "t", &x, &actual[..10], &forecast).unwrap_err();
    assert!(matches!(err, Error::Shape { .. }), "{err:?}");
    assert_eq!(dir.files(), ["fc.png", "fc.svg", "xy.svg"]);
}
