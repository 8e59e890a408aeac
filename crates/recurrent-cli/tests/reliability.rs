//! Issue 18 (hostile and malformed input): no panic, bounded memory, one
//! line naming the file or flag with exit status 2. Each test here failed
//! before its fix. Peak memory is measured per child with wait4's rusage
//! (ru_maxrss), never by timing.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A fresh folder under the system temp dir.
fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("recurrent-rel-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// What one run of the binary gave: exit code, stdout, stderr, peak RSS (bytes).
struct Run {
    code: i32,
    out: String,
    err: String,
    peak: u64,
}

/// Runs `recurrent args...`, killing it after 120 s (a FIFO must not block
/// forever), and measures its peak resident memory with wait4.
fn run(args: &[&str]) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_recurrent"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run recurrent");
    let pid = child.id() as libc::pid_t;
    let mut out_pipe = child.stdout.take().unwrap();
    let mut err_pipe = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out_pipe.read_to_end(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err_pipe.read_to_end(&mut s);
        s
    });
    let start = Instant::now();
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value of the C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: wait4 on our own child with valid pointers.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if r == pid {
            break;
        }
        assert!(r == 0, "wait4 failed");
        if start.elapsed() > Duration::from_secs(120) {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            // SAFETY: as above.
            unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
            panic!("recurrent {args:?} did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = String::from_utf8_lossy(&out_reader.join().unwrap()).into_owned();
    let err = String::from_utf8_lossy(&err_reader.join().unwrap()).into_owned();
    let code = if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { 128 + libc::WTERMSIG(status) };
    Run { code, out, err, peak: usage.ru_maxrss as u64 * 1024 }
}

/// Asserts the run failed with exit 2 and one error line of at most 300
/// characters, free of control bytes, containing every `needles`.
fn refused(r: &Run, needles: &[&str]) {
    assert_eq!(r.code, 2, "expected exit 2, got {}:\nstdout: {}\nstderr: {}", r.code, r.out, r.err);
    let lines: Vec<&str> = r.err.lines().collect();
    assert_eq!(lines.len(), 1, "expected one error line, got:\n{}", r.err);
    let line = lines[0];
    assert!(line.starts_with("error: "), "{line}");
    assert!(line.chars().count() <= 300, "{} characters: {line}", line.chars().count());
    assert!(!line.chars().any(|c| c.is_control()), "control character in: {line:?}");
    for n in needles {
        assert!(line.contains(n), "{n:?} missing from: {line}");
    }
}

/// Peak memory allowed on a hostile input of `disk` bytes: max(100 MB, 3 x size).
fn allowed(disk: u64) -> u64 {
    (100 << 20).max(3 * disk)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

// ---------------------------------------------------------------- panics (defect 3)

#[test]
fn ts_without_class_labels_is_refused() {
    let d = tmp("ts-nolabel");
    let p = d.join("x.ts");
    let mut t = String::from("@problemName x\n@univariate true\n@classLabel false\n@data\n");
    for i in 0..20 {
        t.push_str(&format!("{},{},{}\n", i, i + 1, i + 2));
    }
    std::fs::write(&p, t).unwrap();
    let r = run(&["train", "--task", "ts", "--data", s(&p), "--epochs", "1", "--out", s(&d.join("o"))]);
    refused(&r, &["x.ts", "@classLabel false"]);
}

/// Writes an IDX file of unsigned bytes.
fn idx(path: &Path, dims: &[u32], data: &[u8]) {
    let mut b = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        b.extend_from_slice(&d.to_be_bytes());
    }
    b.extend_from_slice(data);
    std::fs::write(path, b).unwrap();
}

/// An MNIST-like folder of `n` images of rows x cols (train and t10k).
fn mnist_dir(d: &Path, n: u32, rows: u32, cols: u32) {
    std::fs::create_dir_all(d).unwrap();
    for prefix in ["train", "t10k"] {
        let pixels: Vec<u8> = (0..n * rows * cols).map(|i| (i * 37 % 251) as u8).collect();
        let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
        idx(&d.join(format!("{prefix}-images-idx3-ubyte")), &[n, rows, cols], &pixels);
        idx(&d.join(format!("{prefix}-labels-idx1-ubyte")), &[n], &labels);
    }
}

#[test]
fn mnist_images_of_any_size_train_and_other_sizes_are_refused() {
    let d = tmp("mnist-sizes");
    let small = d.join("small");
    mnist_dir(&small, 40, 6, 5);
    let out = d.join("o");
    let r = run(&["train", "--task", "mnist", "--data", s(&small), "--epochs", "1", "--hidden", "4", "--out", s(&out)]);
    assert_eq!(r.code, 0, "{}\n{}", r.out, r.err);
    let ck = out.join("model.safetensors");
    let r = run(&["eval", "--checkpoint", s(&ck), "--data", s(&small)]);
    assert_eq!(r.code, 0, "{}\n{}", r.out, r.err);
    let r = run(&["predict", "--checkpoint", s(&ck), "--data", s(&small)]);
    assert_eq!(r.code, 0, "{}", r.err);
    assert_eq!(r.out.lines().count(), 41);
    // Images of another size: the same width (5) but 28 rows, and [N, 28, 1].
    for (rows, cols) in [(28, 5), (28, 1)] {
        let other = d.join(format!("other{rows}x{cols}"));
        mnist_dir(&other, 10, rows, cols);
        for cmd in ["eval", "predict"] {
            let r = run(&[cmd, "--checkpoint", s(&ck), "--data", s(&other)]);
            refused(&r, &[&format!("{rows}x{cols}"), "6x5"]);
        }
    }
}

// ---------------------------------------------------------------- checkpoints (defects 2, 3, 7)

/// Trains a small forecasting model and returns its checkpoint and data file.
fn forecast_model(d: &Path) -> (PathBuf, PathBuf) {
    let data = d.join("series.csv");
    let mut t = String::from("a,b\n");
    for i in 0..120 {
        let x = i as f64;
        t.push_str(&format!("{:.4},{:.4}\n", (x * 0.3).sin(), (x * 0.2).cos()));
    }
    std::fs::write(&data, t).unwrap();
    let out = d.join("o");
    let r = run(&[
        "train",
        "--task",
        "forecast",
        "--data",
        s(&data),
        "--epochs",
        "1",
        "--hidden",
        "4",
        "--window",
        "5",
        "--out",
        s(&out),
    ]);
    assert_eq!(r.code, 0, "{}\n{}", r.out, r.err);
    (out.join("model.safetensors"), data)
}

/// Rewrites a checkpoint: `meta` edits the "recurrent" JSON, `tensor` the values.
fn rewrite(src: &Path, dst: &Path, meta: impl Fn(&mut serde_json::Value), tensor: impl Fn(&str, &mut Vec<f32>)) {
    use safetensors::tensor::{Dtype, SafeTensors, TensorView};
    let bytes = std::fs::read(src).unwrap();
    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    let mut m: serde_json::Value = serde_json::from_str(&header.metadata().as_ref().unwrap()["recurrent"]).unwrap();
    meta(&mut m);
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut owned: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, view) in st.tensors() {
        let mut v: Vec<f32> =
            view.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        tensor(&name, &mut v);
        owned.push((name, view.shape().to_vec(), v.iter().flat_map(|x| x.to_le_bytes()).collect()));
    }
    let views: Vec<(String, TensorView)> =
        owned.iter().map(|(n, sh, b)| (n.clone(), TensorView::new(Dtype::F32, sh.clone(), b).unwrap())).collect();
    let meta = std::collections::HashMap::from([("recurrent".to_string(), m.to_string())]);
    std::fs::write(dst, safetensors::serialize(views, Some(meta)).unwrap()).unwrap();
}

#[test]
fn checkpoint_metadata_sizes_are_checked_before_allocating() {
    let d = tmp("ck-sizes");
    let (ck, data) = forecast_model(&d);
    let cases: Vec<(&str, Box<dyn Fn(&mut serde_json::Value)>)> = vec![
        ("num_layers", Box::new(|m| m["model"]["rnn"]["num_layers"] = 1_000_000_000u64.into())),
        ("out_size", Box::new(|m| m["model"]["out_size"] = (1u64 << 32).into())),
        ("input_size", Box::new(|m| m["model"]["rnn"]["input_size"] = (1u64 << 32).into())),
        ("hidden_size", Box::new(|m| m["model"]["rnn"]["hidden_size"] = 65536u64.into())),
        ("vocab", Box::new(|m| m["model"]["vocab"] = (1u64 << 40).into())),
    ];
    // Task sizes that would overflow the window arithmetic.
    let bad = d.join("bad-window.safetensors");
    rewrite(&ck, &bad, |m| m["task"]["data"]["window"] = u64::MAX.into(), |_, _| {});
    refused(&run(&["predict", "--checkpoint", s(&bad), "--data", s(&data)]), &["bad-window.safetensors", "window"]);
    for (what, edit) in cases {
        let bad = d.join(format!("bad-{what}.safetensors"));
        rewrite(&ck, &bad, edit, |_, _| {});
        let disk = std::fs::metadata(&bad).unwrap().len();
        let r = run(&["eval", "--checkpoint", s(&bad), "--data", s(&data)]);
        refused(&r, &[&format!("bad-{what}.safetensors"), "parameters but the file holds"]);
        assert!(r.peak <= allowed(disk), "{what}: peak {} bytes", r.peak);
    }
}

#[test]
fn checkpoint_version_2_is_refused() {
    let d = tmp("ck-version");
    let (ck, data) = forecast_model(&d);
    let bad = d.join("v2.safetensors");
    rewrite(&ck, &bad, |m| m["version"] = 2.into(), |_, _| {});
    let r = run(&["eval", "--checkpoint", s(&bad), "--data", s(&data)]);
    refused(&r, &["v2.safetensors", "version 2"]);
}

#[test]
fn checkpoint_with_short_normalisation_lists_is_refused() {
    let d = tmp("ck-norm");
    let (ck, data) = forecast_model(&d);
    for key in ["input_norm", "target_norm"] {
        let bad = d.join(format!("{key}.safetensors"));
        rewrite(
            &ck,
            &bad,
            |m| {
                m["task"][key]["mean"] = serde_json::json!([0.0]);
                m["task"][key]["std"] = serde_json::json!([1.0]);
            },
            |_, _| {},
        );
        for cmd in ["eval", "predict"] {
            let r = run(&[cmd, "--checkpoint", s(&bad), "--data", s(&data)]);
            refused(&r, &[&format!("{key}.safetensors"), key]);
        }
    }
}

#[test]
fn eval_of_an_infinite_loss_is_an_error() {
    let d = tmp("ck-inf");
    let (ck, data) = forecast_model(&d);
    let bad = d.join("huge.safetensors");
    rewrite(
        &ck,
        &bad,
        |_| {},
        |name, v| {
            if name == "fc.bias" {
                v.iter_mut().for_each(|x| *x = 3e38);
            }
        },
    );
    let r = run(&["eval", "--checkpoint", s(&bad), "--data", s(&data)]);
    refused(&r, &["series.csv", "huge.safetensors", "inf"]);
    assert!(!r.out.contains("null"), "{}", r.out);
}

#[test]
fn batch_zero_is_refused_by_eval_and_predict() {
    let d = tmp("batch0");
    let (ck, data) = forecast_model(&d);
    for cmd in ["eval", "predict"] {
        let r = run(&[cmd, "--checkpoint", s(&ck), "--data", s(&data), "--batch", "0"]);
        refused(&r, &["--batch"]);
    }
}

#[test]
fn diagnose_names_the_checkpoint_that_does_not_fit() {
    let d = tmp("diag");
    let (ck, _) = forecast_model(&d);
    let r = run(&["diagnose", "--checkpoint", s(&ck), "--output", s(&d.join("g.svg"))]);
    refused(&r, &["--checkpoint", "model.safetensors"]);
}

// ---------------------------------------------------------------- readers (defects 6, 7)

#[test]
fn a_fifo_is_refused_without_blocking() {
    let d = tmp("fifo");
    let p = d.join("pipe.csv");
    let c = std::ffi::CString::new(s(&p)).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let r = run(&["train", "--task", "forecast", "--data", s(&p), "--epochs", "1", "--out", s(&d.join("o"))]);
    refused(&r, &["pipe.csv", "FIFO"]);
    let r = run(&["train", "--task", "forecast", "--data", s(&d), "--epochs", "1", "--out", s(&d.join("o"))]);
    refused(&r, &["directory"]);
}

#[test]
fn a_missing_test_data_file_is_refused() {
    let d = tmp("testdata");
    let p = d.join("x.ts");
    let mut t = String::from("@problemName x\n@univariate true\n@classLabel true a b\n@data\n");
    for i in 0..20 {
        t.push_str(&format!("{},{},{}:{}\n", i, i + 1, i + 2, if i % 2 == 0 { "a" } else { "b" }));
    }
    std::fs::write(&p, t).unwrap();
    let nosuch = d.join("nosuch.ts");
    let r = run(&[
        "train",
        "--task",
        "ts",
        "--data",
        s(&p),
        "--test-data",
        s(&nosuch),
        "--epochs",
        "1",
        "--out",
        s(&d.join("o")),
    ]);
    refused(&r, &["--test-data", "nosuch.ts"]);
    // And outside ts, where it would be ignored.
    let r = run(&["train", "--task", "adding", "--test-data", s(&p), "--epochs", "1", "--out", s(&d.join("o2"))]);
    refused(&r, &["--test-data", "only task ts"]);
}

#[test]
fn one_huge_csv_line_is_refused_in_bounded_memory() {
    let d = tmp("hugeline");
    let p = d.join("wide.csv");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&p).unwrap());
    f.write_all(b"a,b\n1,2\n").unwrap();
    let chunk = "1,".repeat(1 << 16);
    for _ in 0..800 {
        f.write_all(chunk.as_bytes()).unwrap();
    }
    f.write_all(b"1\n").unwrap();
    drop(f);
    let disk = std::fs::metadata(&p).unwrap().len();
    let r = run(&["train", "--task", "forecast", "--data", s(&p), "--epochs", "1", "--out", s(&d.join("o"))]);
    refused(&r, &["wide.csv:3", "fields"]);
    assert!(r.peak <= allowed(disk), "peak {} bytes for a {disk}-byte file", r.peak);
    // One huge field in a token file.
    let p = d.join("tokens.csv");
    let mut t = String::from("label,text\n");
    t.push_str("pos,");
    t.push_str(&"A".repeat(20 << 20));
    t.push('\n');
    std::fs::write(&p, t).unwrap();
    let disk = std::fs::metadata(&p).unwrap().len();
    let r = run(&["train", "--task", "tokens", "--data", s(&p), "--epochs", "1", "--out", s(&d.join("o2"))]);
    refused(&r, &["tokens.csv:2", "longer than"]);
    assert!(r.peak <= allowed(disk), "peak {} bytes for a {disk}-byte file", r.peak);
}

fn gzip(bytes_of: impl Fn(&mut dyn Write)) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    bytes_of(&mut e);
    e.finish().unwrap()
}

#[test]
fn gzip_bombs_are_refused_in_bounded_memory() {
    let d = tmp("bomb");
    // A CSV that expands to 256 MiB.
    let p = d.join("bomb.csv.gz");
    let line = "1.5,2.5\n".repeat(1 << 13);
    std::fs::write(
        &p,
        gzip(|w| {
            w.write_all(b"a,b\n").unwrap();
            for _ in 0..(256 << 20) / line.len() {
                w.write_all(line.as_bytes()).unwrap();
            }
        }),
    )
    .unwrap();
    let disk = std::fs::metadata(&p).unwrap().len();
    let r = run(&["train", "--task", "forecast", "--data", s(&p), "--epochs", "1", "--out", s(&d.join("o"))]);
    refused(&r, &["bomb.csv.gz", "gzip data expands"]);
    assert!(r.peak <= allowed(disk), "peak {} bytes for a {disk}-byte file", r.peak);
    // IDX images whose header declares 10 images but whose stream holds 256 MiB.
    let m = d.join("mnist");
    mnist_dir(&m, 10, 28, 28);
    let img = m.join("train-images-idx3-ubyte");
    let head = std::fs::read(&img).unwrap()[..16].to_vec();
    std::fs::remove_file(&img).unwrap();
    let zeros = vec![0u8; 1 << 20];
    let gz = m.join("train-images-idx3-ubyte.gz");
    std::fs::write(
        &gz,
        gzip(|w| {
            w.write_all(&head).unwrap();
            for _ in 0..256 {
                w.write_all(&zeros).unwrap();
            }
        }),
    )
    .unwrap();
    let disk = std::fs::metadata(&gz).unwrap().len();
    let r = run(&["train", "--task", "mnist", "--data", s(&m), "--epochs", "1", "--out", s(&d.join("o2"))]);
    refused(&r, &["train-images-idx3-ubyte.gz", "found more"]);
    assert!(r.peak <= allowed(disk), "peak {} bytes for a {disk}-byte file", r.peak);
    // A header that declares more than the compressed file can hold.
    let mut big = head.clone();
    big[4..8].copy_from_slice(&4_000_000u32.to_be_bytes());
    std::fs::write(&gz, gzip(|w| w.write_all(&big).unwrap())).unwrap();
    let r = run(&["train", "--task", "mnist", "--data", s(&m), "--epochs", "1", "--out", s(&d.join("o3"))]);
    refused(&r, &["train-images-idx3-ubyte.gz", "more than the file"]);
    assert!(r.peak <= allowed(0), "peak {} bytes", r.peak);
}

// ---------------------------------------------------------------- messages (defect 8)

#[test]
fn echoed_values_are_short_and_control_bytes_escaped() {
    let d = tmp("echo");
    let p = d.join("long.csv");
    let mut t = String::from("a,b\n1,2\n");
    t.push_str(&"9x".repeat(1 << 20));
    t.push_str(",3\n");
    std::fs::write(&p, t).unwrap();
    let r = run(&["train", "--task", "forecast", "--data", s(&p), "--epochs", "1", "--out", s(&d.join("o"))]);
    refused(&r, &["long.csv:3", "is not a number", "..."]);
    let p = d.join("esc.csv");
    std::fs::write(&p, "a,b\n1,2\n\x1b[31mred\x07,3\n").unwrap();
    let r = run(&["train", "--task", "forecast", "--data", s(&p), "--epochs", "1", "--out", s(&d.join("o"))]);
    refused(&r, &["esc.csv:3", "\\u{1b}[31mred\\u{7}"]);
}

#[test]
fn values_that_overflow_after_normalisation_name_the_file() {
    let d = tmp("overflow");
    let p = d.join("big.csv");
    let mut t = String::from("a\n");
    for i in 0..300 {
        t.push_str(&format!("{}\n", if i == 250 { "-1e300" } else { "1" }));
    }
    std::fs::write(&p, t).unwrap();
    let r = run(&[
        "train",
        "--task",
        "forecast",
        "--data",
        s(&p),
        "--window",
        "5",
        "--epochs",
        "1",
        "--out",
        s(&d.join("o")),
    ]);
    refused(&r, &["big.csv", "too large"]);
}

#[test]
fn mnist_labels_beyond_nine_name_the_file() {
    let d = tmp("mnist-255");
    let m = d.join("m");
    mnist_dir(&m, 20, 4, 4);
    let labels: Vec<u8> = (0..20).map(|i| if i == 7 { 255 } else { (i % 10) as u8 }).collect();
    idx(&m.join("train-labels-idx1-ubyte"), &[20], &labels);
    let r = run(&["train", "--task", "mnist", "--data", s(&m), "--epochs", "1", "--out", s(&d.join("o"))]);
    refused(&r, &["train-labels-idx1-ubyte", "255"]);
}

#[test]
fn a_ts_test_file_with_other_channels_or_labels_is_refused() {
    let d = tmp("ts-test");
    let train = d.join("x_TRAIN.ts");
    let mut t = String::from("@problemName x\n@classLabel true a b\n@data\n");
    for i in 0..20 {
        t.push_str(&format!("{},{},{}:{}\n", i, i + 1, i + 2, if i % 2 == 0 { "a" } else { "b" }));
    }
    std::fs::write(&train, t).unwrap();
    let two = d.join("two.ts");
    std::fs::write(&two, "@classLabel true a b\n@data\n1,2,3:4,5,6:a\n1,2,3:4,5,6:b\n").unwrap();
    let o = d.join("o");
    let r =
        run(&["train", "--task", "ts", "--data", s(&train), "--test-data", s(&two), "--epochs", "1", "--out", s(&o)]);
    refused(&r, &["two.ts", "2 channels"]);
    let other = d.join("other.ts");
    std::fs::write(&other, "@classLabel true a c\n@data\n1,2,3:a\n1,2,3:c\n").unwrap();
    let r =
        run(&["train", "--task", "ts", "--data", s(&train), "--test-data", s(&other), "--epochs", "1", "--out", s(&o)]);
    refused(&r, &["other.ts", "\"c\""]);
}
