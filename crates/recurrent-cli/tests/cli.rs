//! The command line end to end on small generated data: every task learns
//! (beats its stated baseline), checkpoints round-trip, resume equals an
//! uninterrupted run, bad input gives one line and exit status 2, and nothing
//! is overwritten by a failed run.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_recurrent"))
}

/// A fresh folder under the system temp dir.
fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("recurrent-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("run recurrent")
}

fn text(o: &Output) -> (String, String) {
    (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

/// Runs `train` and returns (metric name, best validation value, baseline value).
fn train(args: &[&str]) -> (String, f64, f64) {
    let o = run(&[&["train"], args].concat());
    let (out, err) = text(&o);
    assert!(o.status.success(), "train {args:?} failed:\n{out}\n{err}");
    let line = out.lines().find(|l| l.starts_with("best model:")).unwrap_or_else(|| panic!("no summary in:\n{out}"));
    // "best model: validation <metric> <value>  (<baseline>: <value>)"
    let words: Vec<&str> = line.split_whitespace().collect();
    let metric = words[3].to_string();
    let value: f64 = words[4].parse().unwrap();
    let base: f64 = line.rsplit(": ").next().unwrap().trim_end_matches(')').parse().unwrap();
    (metric, value, base)
}

fn learns(task: &str, args: &[&str]) {
    let (metric, v, base) = train(args);
    if metric == "accuracy" {
        assert!(v > base + 0.1, "{task}: accuracy {v} does not beat the baseline {base}");
    } else {
        assert!(v < 0.7 * base, "{task}: {metric} {v} does not beat the baseline {base}");
    }
}

fn write(path: &Path, s: &str) {
    std::fs::write(path, s).unwrap();
}

/// A smooth two-column series with a date column.
fn series_csv(n: usize) -> String {
    let mut s = String::from("date,load,temp\n");
    for i in 0..n {
        let t = i as f64;
        s.push_str(&format!(
            "2020-01-{:02} {:02}:00,{:.4},{:.4}\n",
            1 + i / 24,
            i % 24,
            10.0 + 3.0 * (t * 0.3).sin() + (t * 0.05).cos(),
            5.0 + (t * 0.3).cos()
        ));
    }
    s
}

#[test]
fn the_default_run_beats_the_naive_baseline_and_writes_its_files() {
    let d = tmp("default");
    let out = d.join("run");
    learns("mackey-glass", &["--out", out.to_str().unwrap(), "--epochs", "6"]);
    // The test metric is printed next to the same baseline computed on the test part.
    let o = run(&["train", "--out", d.join("again").to_str().unwrap(), "--epochs", "2"]);
    let so = text(&o).0;
    let test_line = so.lines().find(|l| l.trim_start().starts_with("test rmse")).unwrap_or_else(|| panic!("{so}"));
    assert!(test_line.contains("(naive last value: "), "{test_line}");
    // The summary says how the best model was chosen (its metric need not be the best one seen).
    assert!(so.contains("chosen by the lowest validation loss ("), "{so}");
    for f in ["model.safetensors", "metrics.jsonl", "loss.svg", "forecast.svg", "config.toml", "state.safetensors"] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 6);
    for key in [
        "\"step\"",
        "\"epoch\"",
        "\"train_loss\"",
        "\"val_loss\"",
        "\"val_metric\"",
        "\"lr\"",
        "\"grad_norm\"",
        "\"tokens_per_s\"",
    ] {
        assert!(metrics.lines().next().unwrap().contains(key), "{key}");
    }
}

#[test]
fn forecasting_from_csv_learns_and_predicts() {
    let d = tmp("forecast");
    let data = d.join("series.csv");
    write(&data, &series_csv(400));
    let out = d.join("run");
    let o = out.to_str().unwrap();
    learns(
        "forecast",
        &[
            "--task",
            "forecast",
            "--data",
            data.to_str().unwrap(),
            "--date-column",
            "date",
            "--window",
            "12",
            "--horizon",
            "3",
            "--targets",
            "load",
            "--epochs",
            "8",
            "--out",
            o,
        ],
    );
    let ck = out.join("model.safetensors");
    let p1 = run(&["predict", "--checkpoint", ck.to_str().unwrap(), "--data", data.to_str().unwrap()]);
    let p2 = run(&["predict", "--checkpoint", ck.to_str().unwrap(), "--data", data.to_str().unwrap()]);
    assert!(p1.status.success(), "{:?}", text(&p1));
    assert_eq!(p1.stdout, p2.stdout, "predictions from a checkpoint are deterministic");
    let csv = String::from_utf8(p1.stdout).unwrap();
    let mut lines = csv.lines();
    assert_eq!(lines.next().unwrap(), "date,load_t+1,load_t+2,load_t+3");
    let first: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(first[0], "2020-01-01 11:00", "the first window ends at row 12");
    let v: f64 = first[1].parse().unwrap();
    assert!((5.0..16.0).contains(&v), "forecast in data units: {v}");
    assert_eq!(csv.lines().count(), 1 + 400 - 12 + 1);
    let e = run(&["eval", "--checkpoint", ck.to_str().unwrap(), "--data", data.to_str().unwrap()]);
    let (eo, ee) = text(&e);
    assert!(e.status.success(), "{ee}");
    assert!(eo.contains("\"metric\":\"rmse\""), "{eo}");
}

#[test]
fn classification_from_csv_and_ts_learns() {
    let d = tmp("classify");
    // Class "up": rising ramp with noise; class "down": falling ramp.
    let mut csv = String::from("label,v0,v1,v2,v3,v4,v5,v6,v7\n");
    let mut ts = String::from(
        "# generated\n@problemName Ramps\n@univariate true\n@equalLength false\n@classLabel true up down\n@data\n",
    );
    for i in 0..200 {
        let up = i % 2 == 0;
        let noise = |k: usize| (((i * 31 + k * 17) % 13) as f64 - 6.0) * 0.05;
        let vals: Vec<String> =
            (0..8).map(|k| format!("{:.3}", if up { k as f64 } else { 7.0 - k as f64 } * 0.2 + noise(k))).collect();
        csv.push_str(&format!("{},{}\n", if up { "up" } else { "down" }, vals.join(",")));
        let len = 5 + i % 4; // variable length
        ts.push_str(&format!("{}:{}\n", vals[..len].join(","), if up { "up" } else { "down" }));
    }
    let c = d.join("rows.csv");
    write(&c, &csv);
    let t = d.join("Ramps_TRAIN.ts");
    write(&t, &ts);
    learns(
        "classify",
        &[
            "--task",
            "classify",
            "--data",
            c.to_str().unwrap(),
            "--label-column",
            "label",
            "--epochs",
            "6",
            "--out",
            d.join("r1").to_str().unwrap(),
        ],
    );
    learns(
        "ts",
        &["--task", "ts", "--data", t.to_str().unwrap(), "--epochs", "6", "--out", d.join("r2").to_str().unwrap()],
    );
    let p = run(&[
        "predict",
        "--checkpoint",
        d.join("r2/model.safetensors").to_str().unwrap(),
        "--data",
        t.to_str().unwrap(),
    ]);
    let (po, pe) = text(&p);
    assert!(p.status.success(), "{pe}");
    assert!(po.starts_with("example,predicted\n1,up\n2,down"), "{}", &po[..60.min(po.len())]);
}

#[test]
fn sequential_mnist_format_learns() {
    // A tiny IDX pair (gzip): 10 classes, each a bright horizontal bar at row 2*class+3.
    use flate2::write::GzEncoder;
    use std::io::Write;
    let d = tmp("mnist");
    let n = 600;
    let mut img = vec![0u8, 0, 8, 3];
    for v in [n as u32, 28, 28] {
        img.extend_from_slice(&v.to_be_bytes());
    }
    let mut lab = vec![0u8, 0, 8, 1];
    lab.extend_from_slice(&(n as u32).to_be_bytes());
    for i in 0..n {
        let c = i % 10;
        for r in 0..28 {
            for col in 0..28 {
                img.push(if r == 2 * c + 3 && col > 3 && col < 24 { 250 } else { ((i * 7 + r * 3 + col) % 40) as u8 });
            }
        }
        lab.push(c as u8);
    }
    for (name, bytes) in [("train-images-idx3-ubyte.gz", &img), ("train-labels-idx1-ubyte.gz", &lab)] {
        let mut e = GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(bytes).unwrap();
        std::fs::write(d.join(name), e.finish().unwrap()).unwrap();
    }
    // Plain (not gzip) test files.
    std::fs::write(d.join("t10k-images-idx3-ubyte"), &img).unwrap();
    std::fs::write(d.join("t10k-labels-idx1-ubyte"), &lab).unwrap();
    learns(
        "mnist",
        &[
            "--task",
            "mnist",
            "--data",
            d.to_str().unwrap(),
            "--epochs",
            "5",
            "--hidden",
            "32",
            "--lr",
            "0.01",
            "--out",
            d.join("run").to_str().unwrap(),
        ],
    );
}

#[test]
fn token_classification_learns() {
    let d = tmp("tokens");
    // Label "has" when the string contains the motif GATA.
    let mut s = String::from("label\tseq\n");
    let bases = ['A', 'C', 'G', 'T'];
    for i in 0..400usize {
        let mut x: String = (0..12).map(|k| bases[(i * 7 + k * 13 + (i * k) % 5) % 4]).collect();
        let has = i % 2 == 0;
        x = x.replace("GATA", "GCTA");
        if has {
            let at = i % 8;
            x.replace_range(at..at + 4, "GATA");
        }
        s.push_str(&format!("{}\t{}\n", if has { "has" } else { "not" }, x));
    }
    let f = d.join("seqs.tsv");
    write(&f, &s);
    learns(
        "tokens",
        &[
            "--task",
            "tokens",
            "--data",
            f.to_str().unwrap(),
            "--label-column",
            "label",
            "--text-column",
            "seq",
            "--epochs",
            "12",
            "--lr",
            "0.01",
            "--out",
            d.join("run").to_str().unwrap(),
        ],
    );
}

#[test]
fn character_language_model_learns_and_generates() {
    let d = tmp("charlm");
    let corpus = "the cat sat on the mat. the dog sat on the log. ".repeat(120);
    let f = d.join("text.txt");
    write(&f, &corpus);
    let out = d.join("run");
    let o = run(&[
        "train",
        "--task",
        "charlm",
        "--data",
        f.to_str().unwrap(),
        "--epochs",
        "4",
        "--batch",
        "8",
        "--k1",
        "25",
        "--k2",
        "25",
        "--hidden",
        "48",
        "--lr",
        "0.01",
        "--out",
        out.to_str().unwrap(),
    ]);
    let (so, se) = text(&o);
    assert!(o.status.success(), "{so}\n{se}");
    assert!(so.contains("bits/char"), "{so}");
    let line = so.lines().find(|l| l.starts_with("best model:")).unwrap();
    let v: f64 = line.split_whitespace().nth(4).unwrap().parse().unwrap();
    let base: f64 = line.rsplit(": ").next().unwrap().trim_end_matches(')').parse().unwrap();
    assert!(v < 0.5 * base, "bpc {v} vs uniform {base}");
    let ck = out.join("model.safetensors");
    let generate = || {
        let args = ["--prompt", "the ", "--length", "40", "--temperature", "0.5", "--seed", "3"];
        run(&[&["generate", "--checkpoint", ck.to_str().unwrap()][..], &args[..]].concat())
    };
    let (g1, g2) = (generate(), generate());
    assert!(g1.status.success(), "{:?}", text(&g1));
    assert_eq!(g1.stdout, g2.stdout, "same seed, same text");
    assert!(String::from_utf8_lossy(&g1.stdout).starts_with("the "));
    // A step budget and mid-epoch validation also apply to streams.
    let o2 = d.join("budget");
    let o = run(&[
        "train",
        "--task",
        "charlm",
        "--data",
        f.to_str().unwrap(),
        "--batch",
        "8",
        "--k1",
        "10",
        "--k2",
        "10",
        "--max-steps",
        "12",
        "--val-every",
        "5",
        "--out",
        o2.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{:?}", text(&o));
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(o2.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let steps: Vec<u64> = lines.iter().map(|m| m["step"].as_u64().unwrap()).collect();
    assert_eq!(steps, vec![5, 10, 12]);
}

#[test]
fn synthetic_adding_and_copy_learn() {
    let d = tmp("synthetic");
    learns(
        "adding",
        &[
            "--task",
            "adding",
            "--length",
            "10",
            "--samples",
            "2000",
            "--epochs",
            "10",
            "--lr",
            "0.01",
            "--out",
            d.join("a").to_str().unwrap(),
        ],
    );
    learns(
        "copy",
        &[
            "--task",
            "copy",
            "--length",
            "3",
            "--delay",
            "2",
            "--symbols",
            "4",
            "--samples",
            "2000",
            "--epochs",
            "15",
            "--lr",
            "0.01",
            "--hidden",
            "48",
            "--out",
            d.join("c").to_str().unwrap(),
        ],
    );
}

#[test]
fn every_gradient_estimator_trains_by_name() {
    let d = tmp("estimators");
    learns(
        "mackey-glass tbptt",
        &["--estimator", "tbptt", "--k1", "8", "--k2", "12", "--epochs", "4", "--out", d.join("t").to_str().unwrap()],
    );
    let common = ["--hidden", "16", "--window", "12", "--length", "1000", "--epochs", "8", "--batch", "16"];
    for est in ["rtrl", "snap1", "snap2"] {
        learns(
            est,
            &[&common[..], &["--estimator", est, "--lr", "0.01", "--out", d.join(est).to_str().unwrap()]].concat(),
        );
    }
    // UORO's noisy estimate learns more slowly: its validation loss must fall five-fold.
    let u = d.join("uoro");
    train(&[&common[..], &["--estimator", "uoro", "--lr", "0.003", "--out", u.to_str().unwrap()]].concat());
    let vals: Vec<f64> = std::fs::read_to_string(u.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["val_loss"].as_f64().unwrap())
        .collect();
    assert!(vals.iter().cloned().fold(f64::INFINITY, f64::min) < 0.2 * vals[0], "uoro: {vals:?}");
}

fn strip_timing(metrics: &str) -> Vec<serde_json::Value> {
    metrics
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            v.as_object_mut().unwrap().remove("tokens_per_s");
            v
        })
        .collect()
}

#[test]
fn resume_equals_an_uninterrupted_run() {
    let d = tmp("resume");
    let (a, b) = (d.join("a"), d.join("b"));
    let common = [
        "--task",
        "adding",
        "--length",
        "8",
        "--samples",
        "400",
        "--dropout",
        "0.2",
        "--layers",
        "2",
        "--schedule",
        "step",
        "--step-size",
        "1",
        "--gamma",
        "0.7",
    ];
    train(&[&common[..], &["--epochs", "4", "--out", a.to_str().unwrap()]].concat());
    train(&[&common[..], &["--epochs", "2", "--out", b.to_str().unwrap()]].concat());
    train(&["--resume", b.to_str().unwrap(), "--epochs", "4"]);
    for f in ["model.safetensors", "state.safetensors"] {
        assert_eq!(std::fs::read(a.join(f)).unwrap(), std::fs::read(b.join(f)).unwrap(), "{f} differs");
    }
    let (ma, mb) = (
        std::fs::read_to_string(a.join("metrics.jsonl")).unwrap(),
        std::fs::read_to_string(b.join("metrics.jsonl")).unwrap(),
    );
    assert_eq!(strip_timing(&ma), strip_timing(&mb));
    // Options that define the run cannot change on resume; the error names the flag and the old value.
    let bs = b.to_str().unwrap();
    fails_with(&["train", "--resume", bs, "--lr", "0.1"], &["--lr", "cannot change when resuming", "0.005"]);
    fails_with(&["train", "--resume", bs, "--length", "9"], &["--length", "cannot change"]);
    fails_with(&["train", "--resume", bs, "--schedule", "cosine"], &["--schedule", "step"]);
    // A cosine schedule is planned for its number of epochs.
    let c = d.join("c");
    train(&[&common[..8], &["--schedule", "cosine", "--epochs", "3", "--out", c.to_str().unwrap()]].concat());
    fails_with(&["train", "--resume", c.to_str().unwrap(), "--epochs", "6"], &["--epochs", "cosine", "3 epochs"]);
}

/// Runs a command that must fail with status 2 and one line naming `what`.
fn fails_with(args: &[&str], what: &[&str]) {
    let o = run(args);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{args:?}: expected exit 2\nstdout: {out}\nstderr: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{args:?}: expected one line, got:\n{err}");
    for w in what {
        assert!(lines[0].contains(w), "{args:?}: {:?} does not mention {w:?}", lines[0]);
    }
}

#[test]
fn bad_input_gives_one_line_and_status_2() {
    let d = tmp("bad");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let missing = d.join("nope.csv");
    let empty = d.join("empty.csv");
    write(&empty, "");
    let ragged = d.join("ragged.csv");
    write(&ragged, "a,b\n1,2\n3\n5,6\n");
    let nonnum = d.join("nonnum.csv");
    write(&nonnum, "a,b\n1,2\n3,x\n");
    let nan = d.join("nan.csv");
    write(&nan, "a,b\n1,2\n3,NaN\n");
    let short = d.join("short.csv");
    write(&short, &series_csv(30));
    let out = s(&d.join("out"));
    let f = |task: &str, p: &Path, extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> =
            ["train", "--task", task, "--data", &s(p), "--out", &out].iter().map(|x| x.to_string()).collect();
        v.extend(extra.iter().map(|x| x.to_string()));
        v
    };
    let call = |v: Vec<String>, what: &[&str]| fails_with(&v.iter().map(|x| x.as_str()).collect::<Vec<_>>(), what);
    call(f("forecast", &missing, &[]), &["nope.csv"]);
    call(f("forecast", &empty, &[]), &["empty.csv", "empty"]);
    call(f("forecast", &ragged, &[]), &["ragged.csv:3"]);
    call(f("forecast", &nonnum, &[]), &["nonnum.csv:3", "x"]);
    call(f("forecast", &nan, &[]), &["nan.csv:3", "NaN"]);
    call(f("forecast", &short, &["--date-column", "date", "--targets", "nosuch"]), &["nosuch"]);
    call(f("forecast", &short, &["--date-column", "date", "--window", "40"]), &["short.csv", "window 40"]);
    fails_with(&["train", "--cell", "transformer"], &["--cell", "transformer", "lstm"]);
    fails_with(&["train", "--task", "copy", "--estimator", "rtrl"], &["rtrl", "tokens"]);
    fails_with(&["train", "--estimator", "rtrl", "--hidden", "256", "--memory-limit-mb", "1"], &["memory", "limit"]);
    fails_with(&["train", "--k1", "10", "--k2", "5"], &["k2", "k1"]);
    fails_with(
        &["train", "--task", "adding", "--val-fraction", "0", "--out", &s(&d.join("noval"))],
        &["data.val_fraction", "no validation"],
    );
    // Sizes from flags are checked against the memory limit (or their own bound) before any allocation.
    let o = s(&d.join("big"));
    fails_with(&["train", "--hidden", "100000", "--out", &o], &["memory limit", "GiB"]);
    fails_with(&["train", "--layers", "1000000", "--out", &o], &["memory limit", "TiB"]);
    fails_with(&["train", "--hidden", "99999999999", "--out", &o], &["memory limit"]);
    fails_with(&["train", "--window", "18446744073709551615", "--out", &o], &["window 18446744073709551615"]);
    fails_with(&["train", "--threads", "100000", "--out", &o], &["train.threads", "1024"]);
    fails_with(&["train", "--gamma", "nan", "--out", &o], &["train.gamma"]);
    // Unknown key in a TOML file: names the file, line and key.
    let toml = d.join("run.toml");
    write(&toml, "task = \"adding\"\n[model]\nhiden = 3\n");
    fails_with(&["train", "--config", &s(&toml)], &["run.toml:3", "hiden"]);
    // Corrupt checkpoint, and a checkpoint of another model on resume.
    let bad_ck = d.join("bad.safetensors");
    write(&bad_ck, "definitely not safetensors");
    fails_with(&["eval", "--checkpoint", &s(&bad_ck), "--data", &s(&short)], &["bad.safetensors"]);
    let r = d.join("r");
    train(&["--task", "adding", "--length", "6", "--samples", "300", "--epochs", "1", "--out", &s(&r)]);
    let cfg = std::fs::read_to_string(r.join("config.toml")).unwrap().replace("hidden = 32", "hidden = 16");
    write(&r.join("config.toml"), &cfg);
    fails_with(
        &["train", "--resume", &s(&r), "--epochs", "2"],
        &["state.safetensors", "different model", "model.hidden was 32, now 16"],
    );
}

#[test]
fn a_failed_run_overwrites_nothing() {
    let d = tmp("keep");
    let out = d.join("run");
    train(&["--task", "adding", "--length", "6", "--samples", "300", "--epochs", "2", "--out", out.to_str().unwrap()]);
    let before = std::fs::read(out.join("model.safetensors")).unwrap();
    let metrics_before = std::fs::read(out.join("metrics.jsonl")).unwrap();
    // Bad data: fails before touching the folder.
    let o = run(&[
        "train",
        "--task",
        "forecast",
        "--data",
        d.join("missing.csv").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--overwrite",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("missing.csv"), "{}", text(&o).1);
    assert_eq!(std::fs::read(out.join("model.safetensors")).unwrap(), before);
    assert_eq!(std::fs::read(out.join("metrics.jsonl")).unwrap(), metrics_before);
    // A loss that turns NaN stops the run with a clear message; no temporary files are left behind.
    let o = run(&[
        "train",
        "--task",
        "adding",
        "--length",
        "6",
        "--samples",
        "300",
        "--epochs",
        "2",
        "--lr",
        "1e30",
        "--clip-norm",
        "0",
        "--optimizer",
        "sgd",
        "--out",
        d.join("nan").to_str().unwrap(),
    ]);
    let (_, err) = text(&o);
    assert!(!o.status.success());
    assert!(err.contains("not finite"), "{err}");
    let leftovers: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty());
}

#[test]
fn train_help_documents_every_option_with_its_default_and_key() {
    let o = run(&["train", "--help"]);
    let help = String::from_utf8(o.stdout).unwrap();
    let entry = |flag: &str| -> String {
        let pos = help.find(&format!("\n      --{flag} ")).unwrap_or_else(|| panic!("--{flag} not in help")) + 7;
        let after = &help[pos..];
        let end = after[2..].find("\n      --").map_or(after.len(), |e| e + 2);
        after[..end].to_string()
    };
    // Every declared option has a flag whose help gives its default and its TOML key.
    for opt in recurrent_cli::train::config::OPTIONS {
        let e = entry(opt.flag);
        assert!(e.contains("[default: "), "--{}: {e:?}", opt.flag);
        assert!(e.contains(&format!("[config: {}]", opt.key)), "--{}: {e:?}", opt.flag);
    }
    let d = recurrent_cli::train::TrainConfig::default();
    for (flag, default) in [
        ("hidden", d.model.hidden.to_string()),
        ("epochs", d.train.epochs.to_string()),
        ("lr", d.train.lr.to_string()),
        ("window", d.data.window.to_string()),
        ("cell", d.model.cell.to_string()),
        ("optimizer", d.train.optimizer.to_string()),
        ("clip-norm", format!("{:?}", d.train.clip_norm)),
        ("task", d.task.to_string()),
    ] {
        assert!(entry(flag).contains(&format!("[default: {default}]")), "--{flag}: {:?}", entry(flag));
    }
    // Choices are listed from the type's own names.
    assert!(entry("cell").contains("rnn_tanh | rnn_relu | lstm | gru"), "{:?}", entry("cell"));
    let flags = help.lines().filter(|l| l.trim_start().starts_with("--") && !l.contains("--help")).count();
    let n = recurrent_cli::train::config::OPTIONS.len() + 3;
    assert_eq!(flags, n, "--config, --resume, --overwrite and one flag per option");
}

/// The bytes of every file in `dir`, by name.
fn folder(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap()))
        .collect();
    v.sort();
    v
}

#[test]
fn a_folder_holding_a_run_is_never_taken_over_by_accident() {
    let d = tmp("policy");
    let out = d.join("run");
    let o = out.to_str().unwrap();
    let common = ["--task", "adding", "--length", "6", "--samples", "300", "--epochs", "2"];
    train(&[&common[..], &["--out", o]].concat());
    let before = folder(&out);
    // A fresh run into it is refused, naming the choices; nothing changes.
    fails_with(&[&["train"][..], &common[..], &["--out", o]].concat(), &["run", "--resume", "--overwrite"]);
    assert_eq!(folder(&out), before);
    // --overwrite of a run whose every validation loss is infinite (a stale model must never be
    // reported as its result): it fails and the earlier run stays whole, byte for byte.
    let diverge = ["--cell", "rnn", "--optimizer", "sgd", "--lr", "50", "--clip-norm", "0", "--on-nan", "skip"];
    let r = run(&[&["train"][..], &common[..], &diverge[..], &["--out", o, "--overwrite"]].concat());
    assert_eq!(r.status.code(), Some(2), "{:?}", text(&r));
    assert!(text(&r).1.contains("no model was saved"), "{}", text(&r).1);
    assert_eq!(folder(&out), before);
    // A temporary file left by a killed run is removed when a run takes the folder over.
    let stale = out.join(".state.safetensors.tmp-999999999");
    std::fs::write(&stale, b"half").unwrap();
    train(&[&common[..], &["--out", o, "--overwrite"]].concat());
    assert!(!stale.exists(), "stale temporary kept");
    // Without --out, a default folder that holds a run is left alone: the next free one is used.
    let cwd = d.join("cwd");
    std::fs::create_dir_all(&cwd).unwrap();
    for expected in ["runs/adding", "runs/adding-2"] {
        let r = bin().args([&["train"][..], &common[..]].concat()).current_dir(&cwd).output().unwrap();
        assert!(r.status.success(), "{:?}", text(&r));
        assert!(cwd.join(expected).join("state.safetensors").exists(), "{expected}: {:?}", text(&r));
    }
    // config.toml holds absolute data paths, so a resume works from any directory.
    let csv = d.join("series.csv");
    write(&csv, &series_csv(120));
    let f = d.join("f");
    train(&[
        "--task",
        "forecast",
        "--data",
        csv.to_str().unwrap(),
        "--date-column",
        "date",
        "--window",
        "6",
        "--epochs",
        "1",
        "--out",
        f.to_str().unwrap(),
    ]);
    let cfg = std::fs::read_to_string(f.join("config.toml")).unwrap();
    assert!(cfg.contains(&format!("path = \"{}\"", csv.canonicalize().unwrap().display())), "{cfg}");
}

fn metrics(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn clipping_statistics_and_explosion_warnings_are_recorded() {
    let d = tmp("clipstats");
    let common = ["--task", "adding", "--length", "8", "--samples", "300", "--epochs", "2"];
    for (clip, want) in [("1e-9", 1.0), ("1e9", 0.0), ("0", 0.0)] {
        let out = d.join(format!("c{clip}"));
        train(&[&common[..], &["--clip-norm", clip, "--out", out.to_str().unwrap()]].concat());
        for m in metrics(&out) {
            assert_eq!(m["clip_fraction"].as_f64().unwrap(), want, "clip {clip}: {m}");
            assert!(m["grad_norm"].as_f64().unwrap() > 0.0);
            assert!(m["grad_norm_max"].as_f64().unwrap() >= m["grad_norm"].as_f64().unwrap());
        }
    }
    // A learning rate far too large makes an Elman network's gradients explode.
    let out = d.join("explode");
    let o = run(&[
        &["train"][..],
        &common[..],
        &[
            "--cell",
            "rnn",
            "--optimizer",
            "sgd",
            "--lr",
            "50",
            "--clip-norm",
            "0",
            "--on-nan",
            "skip",
            "--out",
            out.to_str().unwrap(),
        ],
    ]
    .concat());
    let (so, se) = text(&o);
    // Every validation loss is infinite, so no model is saved and the run says so.
    assert!(!o.status.success(), "{so}{se}");
    assert!(se.contains("no model was saved"), "{se}");
    assert!(so.contains("warning(s) in this interval"), "{so}");
    // A run with nothing worth keeping leaves its folder as it was: no file at all.
    assert!(!out.join("metrics.jsonl").exists() && !out.join("state.safetensors").exists());
    assert!(se.contains("warning:"), "{se}");
}

#[test]
fn training_stops_once_the_goal_is_reached() {
    let d = tmp("stopat");
    let out = d.join("r");
    let o = run(&[
        "train",
        "--task",
        "adding",
        "--length",
        "6",
        "--samples",
        "300",
        "--epochs",
        "20",
        "--stop-at",
        "0.5",
        "--out",
        out.to_str().unwrap(),
    ]);
    let (so, se) = text(&o);
    assert!(o.status.success(), "{so}{se}");
    assert!(so.contains("reached the goal"), "{so}");
    // Training ran until the first epoch whose validation MSE is at most 0.5, and no further.
    let m = metrics(&out);
    let v: Vec<f64> = m.iter().map(|l| l["val_metric"].as_f64().unwrap()).collect();
    assert!(v.len() < 20 && *v.last().unwrap() <= 0.5 && v[..v.len() - 1].iter().all(|&x| x > 0.5), "{v:?}");
}

/// `--cell mingru` and `--cell minlstm` train through the command (BPTT and
/// the exact element-wise RTRL), store their lucidrains-named projection in
/// the checkpoint, and the checkpoint evaluates and predicts.
#[test]
fn elementwise_cells_train_by_name_and_reload() {
    let d = tmp("mincells");
    let data = d.join("series.csv");
    write(&data, &series_csv(400));
    let data = data.to_str().unwrap();
    for (cell, est, proj) in [
        ("mingru", "bptt", "to_hidden_and_gate"),
        ("minlstm", "bptt", "to_hidden_and_f_i_gate"),
        ("minlstm", "rtrl", "to_hidden_and_f_i_gate"),
    ] {
        let out = d.join(format!("{cell}-{est}"));
        let o = out.to_str().unwrap();
        #[rustfmt::skip]
        let args = [
            "--task", "forecast", "--data", data, "--date-column", "date", "--targets", "load", "--window", "12",
            "--cell", cell, "--estimator", est, "--hidden", "16", "--epochs", "8", "--out", o,
        ];
        learns(&format!("{cell} {est}"), &args);
        let ck = out.join("model.safetensors");
        let bytes = std::fs::read(&ck).unwrap();
        let header = String::from_utf8_lossy(&bytes[..bytes.len().min(4096)]).into_owned();
        assert!(header.contains(&format!("rnn.l0.{proj}.weight")), "{cell}: {header}");
        assert!(!header.contains("weight_hh"), "{cell}: no recurrent weights");
        let e = run(&["eval", "--checkpoint", ck.to_str().unwrap(), "--data", data]);
        assert!(e.status.success(), "{cell} eval: {:?}", text(&e));
        let p = run(&["predict", "--checkpoint", ck.to_str().unwrap(), "--data", data]);
        assert!(p.status.success(), "{cell} predict: {:?}", text(&p));
    }
}
