//! A full disk: a run that cannot write fails with one line naming the file
//! (exit 2) and leaves the previous state whole; once there is room again,
//! resuming reaches exactly the uninterrupted result. Needs a small tmpfs
//! (mounting needs root): skipped with a message where it cannot be made.

use recurrent::train::RunState;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const ARGS: [&str; 12] =
    ["--task", "adding", "--length", "8", "--samples", "300", "--hidden", "8", "--threads", "1", "--epochs", "2"];

fn recurrent(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_recurrent")).args(args).output().unwrap()
}

/// A tmpfs of `kib` KiB, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, kib: usize) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={kib}k"), "tmpfs", dir.to_str()?])
            .output()
            .is_ok_and(|o| o.status.success());
        ok.then(|| Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Fills the file system of `dir` to the last byte.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let p = dir.join("filler");
    let mut f = std::fs::File::create(&p).unwrap();
    let block = vec![0u8; 4096];
    while f.write_all(&block).is_ok() {}
    while f.write_all(&block[..1]).is_ok() {}
    let _ = f.sync_all();
    p
}

#[test]
fn a_full_disk_keeps_the_previous_state_and_resume_completes() {
    let d = tempfile::tempdir().unwrap();
    let Some(fs) = Tmpfs::mount(&d.path().join("small"), 2048) else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root); the full-disk test did not run");
        return;
    };
    let (run, straight) = (fs.0.join("run"), d.path().join("straight"));
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let train = |extra: &[&str]| recurrent(&[&["train"][..], &ARGS[..], extra].concat());
    assert!(train(&["--out", &s(&run)]).status.success());
    let four = [&ARGS[..10], &["--epochs", "4"]].concat();
    let o = recurrent(&[&["train"][..], &four[..], &["--out", &s(&straight)]].concat());
    assert!(o.status.success());
    let before = std::fs::read(run.join("state.safetensors")).unwrap();
    let filler = fill(&fs.0);
    // Resuming on a full disk fails when it writes, and the state of epoch 2 stays whole.
    let o = recurrent(&["train", "--resume", &s(&run), "--epochs", "4"]);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("cannot write") && err.contains(&s(&run)), "{err}");
    assert_eq!(std::fs::read(run.join("state.safetensors")).unwrap(), before);
    RunState::load(&run.join("state.safetensors")).unwrap();
    // A replacing run on the full disk fails too, and the earlier run is still there.
    let o = train(&["--out", &s(&run), "--overwrite", "--seed", "3"]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(std::fs::read(run.join("state.safetensors")).unwrap(), before);
    // Room again: the resume ends where the uninterrupted run ended.
    std::fs::remove_file(filler).unwrap();
    let o = recurrent(&["train", "--resume", &s(&run), "--epochs", "4"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for f in ["state.safetensors", "model.safetensors"] {
        assert!(std::fs::read(run.join(f)).unwrap() == std::fs::read(straight.join(f)).unwrap(), "{f} differs");
    }
    let leftovers: Vec<_> = std::fs::read_dir(&run)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
