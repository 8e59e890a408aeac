//! Issue 18 at the readers: headers of token files, time order of dates,
//! files that are not regular files, gzip streams that expand too far, and
//! echoed values that are cut and escaped.

use recurrent::Error;
use recurrent_data::*;
use std::io::Write;
use std::path::PathBuf;
use tempfile::TempDir;

fn write(dir: &TempDir, name: &str, contents: &[u8]) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

fn data_error<T: std::fmt::Debug>(result: recurrent::Result<T>, parts: &[&str]) -> String {
    let err = result.expect_err("expected an error");
    let msg = err.to_string();
    assert!(matches!(err, Error::Data { .. }), "not a data error: {msg}");
    for part in parts {
        assert!(msg.contains(part), "message lacks {part:?}: {msg}");
    }
    assert!(!msg.contains('\n') && msg.chars().count() <= 300, "{msg}");
    msg
}

#[test]
fn a_token_header_is_detected_with_the_default_columns() {
    let dir = TempDir::new().unwrap();
    for header in ["label,text", "Label,Sentence", "class,seq", "sentiment,review"] {
        let p = write(&dir, "t.csv", format!("{header}\npos,good movie\nneg,bad\n").as_bytes());
        let ex = read_token_examples(&p, None, None, "0", "1", TokenSplit::Whitespace).unwrap();
        assert_eq!(ex.len(), 2, "{header}");
        assert_eq!(ex.examples[0].label, "pos");
        assert_eq!(ex.examples[0].line, 2);
    }
    // No header: the first row is data.
    let p = write(&dir, "t.csv", b"pos,good movie\nneg,bad\n");
    assert_eq!(read_token_examples(&p, None, None, "0", "1", TokenSplit::Whitespace).unwrap().len(), 2);
    // Explicitly no header: kept as data even with header-like words.
    let p = write(&dir, "t.csv", b"label,text\npos,good\n");
    assert_eq!(read_token_examples(&p, None, Some(false), "0", "1", TokenSplit::Whitespace).unwrap().len(), 2);
}

#[test]
fn dates_out_of_order_are_refused_in_every_recognised_format() {
    let dir = TempDir::new().unwrap();
    let opts = CsvOptions { header: None, delimiter: b',', date_column: Some("date".into()) };
    let cases: &[(&str, &str)] = &[
        ("2020-01-02,1\n2020-01-01,2\n", "2020-01-01"),
        ("2020-01-01T10:00:00Z,1\n2020-01-01T09:59:59Z,2\n", "09:59:59Z"),
        ("2020-01-01T10:00:00+02:00,1\n2020-01-01T09:00:00+00:00,2\n2020-01-01T08:00:00+00:00,3\n", "08:00"),
        ("2020-01-01 10:00:00.5,1\n2020-01-01 10:00:00.25,2\n", "00.25"),
        ("2020/01/02,1\n2020/01/01,2\n", "2020/01/01"),
        ("1700000060,1\n1700000000,2\n", "1700000000"),
        ("1750,1\n1749.5,2\n", "1749.5"),
        // 13/01 rules out month-first; then 12/01 goes back under day-first.
        ("13/01/2020,1\n14/01/2020,2\n12/01/2020,3\n", "12/01/2020"),
        ("2020-01-01,1\nJan 2 2020,2\n", "not in the format"),
    ];
    for (rows, needle) in cases {
        let p = write(&dir, "d.csv", format!("date,v\n{rows}").as_bytes());
        let msg = data_error(read_table(&p, &opts), &["d.csv:", needle]);
        assert!(msg.contains(":3:") || msg.contains(":4:"), "{msg}");
    }
    // In order: accepted, including day/month dates that fit one reading.
    for rows in [
        "2020-01-01T10:00:00+02:00,1\n2020-01-01T09:00:00Z,2\n",
        "01/02/2020,1\n01/03/2020,2\n02/01/2020,3\n",
        "1-02,1\n1-01,2\n",
    ] {
        let p = write(&dir, "d.csv", format!("date,v\n{rows}").as_bytes());
        read_table(&p, &opts).unwrap_or_else(|e| panic!("{rows}: {e}"));
    }
}

#[test]
fn paths_that_are_not_regular_files_are_refused() {
    let dir = TempDir::new().unwrap();
    let msg = data_error(read_text(dir.path()), &["directory"]);
    assert!(msg.contains("regular file"), "{msg}");
    data_error(read_idx(&dir.path().join("nosuch")), &["nosuch", "cannot read"]);
    #[cfg(unix)]
    {
        let fifo = dir.path().join("fifo.csv");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc_mkfifo(c.as_ptr(), 0o600) }, 0);
        data_error(read_table(&fifo, &CsvOptions::default()), &["fifo.csv", "FIFO"]);
        data_error(read_ts(&fifo), &["FIFO"]);
        data_error(read_idx(&fifo), &["FIFO"]);
    }
}

#[cfg(unix)]
extern "C" {
    #[link_name = "mkfifo"]
    fn libc_mkfifo(path: *const std::os::raw::c_char, mode: u32) -> i32;
}

#[test]
fn a_gzip_stream_is_read_up_to_its_allowance() {
    let dir = TempDir::new().unwrap();
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let zeros = vec![b'0'; 1 << 20];
    for _ in 0..(MIN_GZIP_ALLOWANCE >> 20) + 1 {
        e.write_all(&zeros).unwrap();
    }
    let p = write(&dir, "bomb.txt.gz", &e.finish().unwrap());
    data_error(read_text(&p), &["bomb.txt.gz", "gzip data expands to more than"]);
    // Within the allowance it reads.
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b"hello").unwrap();
    let p = write(&dir, "ok.txt.gz", &e.finish().unwrap());
    assert_eq!(read_text(&p).unwrap(), "hello");
}

#[test]
fn idx_headers_are_checked_before_the_data_is_read() {
    let dir = TempDir::new().unwrap();
    // Declares 4e9 bytes, holds 3.
    let p = write(&dir, "big.idx", &[0, 0, 8, 2, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 1, 1, 2, 3]);
    data_error(read_idx(&p), &["big.idx", "expected 4294967295 bytes, found 3"]);
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(&[0, 0, 8, 2, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0xff]).unwrap();
    let p = write(&dir, "big.idx.gz", &e.finish().unwrap());
    data_error(read_idx(&p), &["big.idx.gz", "more than the file's"]);
}

#[test]
fn long_and_control_values_are_cut_and_escaped() {
    let dir = TempDir::new().unwrap();
    let mut t = b"a,b\n1,".to_vec();
    t.extend(std::iter::repeat_n(b'x', 100_000));
    t.extend(b"\n");
    let p = write(&dir, "long.csv", &t);
    let msg = data_error(read_table(&p, &CsvOptions::default()), &["long.csv:2", "...\" is not a number"]);
    assert!(msg.len() < 200, "{msg}");
    let p = write(&dir, "esc.ts", b"@classLabel true a\n@data\n1,2:\x1b]0;owned\x07\n");
    let msg = data_error(read_ts(&p), &["esc.ts:3", "\\u{1b}]0;owned\\u{7}"]);
    assert!(!msg.chars().any(char::is_control), "{msg:?}");
}

#[test]
fn lines_longer_than_the_limit_are_refused_before_they_are_parsed() {
    let dir = TempDir::new().unwrap();
    let mut t = b"@classLabel true a\n@data\n".to_vec();
    t.extend(std::iter::repeat_n(b"1,".as_slice(), MAX_LINE_BYTES / 2 + 1).flatten());
    t.extend(b"1:a\n");
    let p = write(&dir, "long.ts", &t);
    data_error(read_ts(&p), &["long.ts:3", "longer than"]);
    let mut t = b"a,b\n".to_vec();
    t.extend(std::iter::repeat_n(b"1,".as_slice(), MAX_FIELDS + 1).flatten());
    t.extend(b"1\n");
    let p = write(&dir, "wide.csv", &t);
    data_error(read_table(&p, &CsvOptions::default()), &["wide.csv:2", "more than 1048576 fields"]);
}

#[test]
fn images_without_pixels_are_refused_before_making_sequences() {
    // Found by cargo fuzz: [136511488, 0, 4104] holds no data, and made 136 million empty sequences.
    let images = Idx { dims: vec![136_511_488, 0, 4104], data: Vec::new() };
    let labels = Idx { dims: vec![136_511_488], data: Vec::new() };
    let err = mnist_sequences(&images, &labels, false).unwrap_err();
    assert!(err.to_string().contains("0x4104"), "{err}");
    assert!(mnist_shape(&images, true).is_err());
}
