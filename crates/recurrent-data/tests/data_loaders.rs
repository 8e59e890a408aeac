//! The data loaders: happy paths on small files written here, every
//! malformed input (the message must name the file, the line where there is
//! one, and the problem), the synthetic tasks, and the real data sets of
//! `../shared/data` when they are present (skipped with a message when not).

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use recurrent::Error;
use recurrent_data::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use tempfile::TempDir;

// ---------------------------------------------------------------- helpers

fn write(dir: &TempDir, name: &str, contents: &[u8]) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// The error message, after checking that it is a data error naming the
/// file, and that it contains every one of `parts`.
fn data_error<T: std::fmt::Debug>(result: recurrent::Result<T>, file: &str, parts: &[&str]) -> String {
    let err = result.expect_err("expected an error");
    let msg = err.to_string();
    assert!(matches!(err, Error::Data { .. }), "not a data error: {msg}");
    assert!(msg.contains(file), "message does not name {file}: {msg}");
    for part in parts {
        assert!(msg.contains(part), "message lacks {part:?}: {msg}");
    }
    msg
}

fn opts(date: Option<&str>) -> CsvOptions {
    CsvOptions { header: None, delimiter: b',', date_column: date.map(String::from) }
}

/// A data set under ../shared/data, or None (with a message) when absent.
fn shared(rel: &str) -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data").join(rel);
    if path.exists() {
        Some(path)
    } else {
        println!("skipping: {} is not present", path.display());
        None
    }
}

// ---------------------------------------------------------------- CSV tables

#[test]
fn table_with_quoted_dates_and_header() {
    let dir = TempDir::new().unwrap();
    let p = write(&dir, "air.csv", b"\"Month\",\"Passengers\"\n\"1949-01\",112\n\"1949-02\",118\n\"1949-03\",132\n");
    let t = read_table(&p, &opts(Some("Month"))).unwrap();
    assert_eq!(t.names, ["Passengers"]);
    assert_eq!(t.columns, [vec![112.0, 118.0, 132.0]]);
    assert_eq!(t.dates.as_deref().unwrap(), ["1949-01", "1949-02", "1949-03"]);
    assert_eq!(t.rows(), 3);
    assert_eq!(t.column("Passengers").unwrap(), &[112.0, 118.0, 132.0]);
    assert_eq!(t.column("0").unwrap(), &[112.0, 118.0, 132.0]);
}

#[test]
fn table_header_detection() {
    let dir = TempDir::new().unwrap();
    // All numeric: no header, generated names.
    let p = write(&dir, "plain.csv", b"1,2.5\n3,-4e1\n");
    let t = read_table(&p, &opts(None)).unwrap();
    assert_eq!(t.names, ["col0", "col1"]);
    assert_eq!(t.columns, [vec![1.0, 3.0], vec![2.5, -40.0]]);
    assert!(t.dates.is_none());
    // The date column by index is not evidence of a header.
    let p = write(&dir, "dated.csv", b"\"1949-01\",112\n1949-02,118\n");
    let t = read_table(&p, &opts(Some("0"))).unwrap();
    assert_eq!(t.names, ["col1"]);
    assert_eq!(t.dates.unwrap(), ["1949-01", "1949-02"]);
    // Forced header on a numeric first row.
    let p = write(&dir, "forced.csv", b"1,2\n3,4\n");
    let t = read_table(&p, &CsvOptions { header: Some(true), ..opts(None) }).unwrap();
    assert_eq!(t.names, ["1", "2"]);
    assert_eq!(t.columns, [vec![3.0], vec![4.0]]);
    // Forced no header makes a text first row an error at line 1.
    let p = write(&dir, "texthead.csv", b"a,b\n1,2\n");
    data_error(
        read_table(&p, &CsvOptions { header: Some(false), ..opts(None) }),
        "texthead.csv",
        &[":1:", "column \"col0\": \"a\" is not a number"],
    );
    // A date column named in a one-column header is still a header.
    let p = write(&dir, "dateonly.csv", b"when,v\n2000,1\n2001,2\n");
    let t = read_table(&p, &opts(Some("when"))).unwrap();
    assert_eq!(t.names, ["v"]);
}

#[test]
fn table_delimiter_bom_crlf_blank_lines_and_gzip() {
    let dir = TempDir::new().unwrap();
    let p =
        write(&dir, "semi.csv", b"\xef\xbb\xbfdate;a;b\r\n2020-01-01 00:00;1;2\r\n\r\n2020-01-01 01:00:00; 3 ;4\r\n");
    let o = CsvOptions { header: None, delimiter: b';', date_column: Some("date".into()) };
    let t = read_table(&p, &o).unwrap();
    assert_eq!(t.names, ["a", "b"]);
    assert_eq!(t.columns, [vec![1.0, 3.0], vec![2.0, 4.0]]);
    let gz = write(&dir, "semi.csv.gz", &gzip(&std::fs::read(&p).unwrap()));
    assert_eq!(read_table(&gz, &o).unwrap().columns, t.columns);
    // Dates that are not in a recognised form are kept unchecked.
    let p = write(&dir, "shampoo.csv", b"Month,Sales\n1-02,3\n1-01,4\n");
    assert_eq!(read_table(&p, &opts(Some("Month"))).unwrap().dates.unwrap(), ["1-02", "1-01"]);
}

#[test]
fn table_errors_name_file_line_and_problem() {
    let dir = TempDir::new().unwrap();
    let p = write(&dir, "ragged.csv", b"a,b,c\n1,2,3\n4,5\n");
    data_error(read_table(&p, &opts(None)), "ragged.csv", &[":3:", "expected 3 fields, found 2"]);

    // Windows line ends and a skipped blank line still give the real line.
    let p = write(&dir, "crlf.csv", b"a,b\r\n1,2\r\n\r\n3,4\r\n5\r\n");
    data_error(read_table(&p, &opts(None)), "crlf.csv", &[":5:", "expected 2 fields, found 1"]);

    let p = write(&dir, "text.csv", b"day,temp\n1,2\n2,3\n3,4\n4,abc\n");
    data_error(read_table(&p, &opts(None)), "text.csv", &[":5:", "column \"temp\": \"abc\" is not a number"]);

    let p = write(&dir, "nan.csv", b"day,temp\n1,2\n2,NaN\n");
    data_error(read_table(&p, &opts(None)), "nan.csv", &[":3:", "column \"temp\": NaN"]);

    let p = write(&dir, "inf.csv", b"day,temp\n1,inf\n");
    data_error(read_table(&p, &opts(None)), "inf.csv", &[":2:", "column \"temp\"", "infinite"]);

    let p = write(&dir, "hole.csv", b"day,temp\n1,\n");
    data_error(read_table(&p, &opts(None)), "hole.csv", &[":2:", "column \"temp\": empty field"]);

    let p = write(&dir, "order.csv", b"d,v\n2000-01-01,1\n2000-01-03,2\n2000-01-02,3\n");
    data_error(
        read_table(&p, &opts(Some("d"))),
        "order.csv",
        &[":4:", "date \"2000-01-02\" is earlier than the previous row"],
    );

    let p = write(&dir, "nodate.csv", b"d,v\n2000,1\n,2\n");
    data_error(read_table(&p, &opts(Some("d"))), "nodate.csv", &[":3:", "empty date"]);

    let missing = dir.path().join("absent.csv");
    data_error(read_table(&missing, &opts(None)), "absent.csv", &["cannot read: No such file or directory"]);

    let p = write(&dir, "empty.csv", b"");
    let msg = data_error(read_table(&p, &opts(None)), "empty.csv", &["file is empty"]);
    assert!(msg.ends_with("empty.csv: file is empty"), "{msg}");

    let p = write(&dir, "headonly.csv", b"a,b\n");
    data_error(read_table(&p, &opts(None)), "headonly.csv", &["no data rows"]);

    let p = write(&dir, "cols.csv", b"a,b,c\n1,2,3\n");
    data_error(read_table(&p, &opts(Some("foo"))), "cols.csv", &["column \"foo\" does not exist (columns: a, b, c)"]);
    let t = read_table(&p, &opts(None)).unwrap();
    let msg = data_error(t.column("foo"), "cols.csv", &["column \"foo\" does not exist (columns: a, b, c)"]);
    assert!(msg.ends_with("cols.csv: column \"foo\" does not exist (columns: a, b, c)"), "{msg}");
    data_error(t.column("3"), "cols.csv", &["column \"3\" does not exist"]);

    let p = write(&dir, "dup.csv", b"a,b,a\n1,2,3\n");
    data_error(read_table(&p, &opts(None)), "dup.csv", &[":1:", "duplicate column name \"a\""]);

    let p = write(&dir, "justdates.csv", b"d\n2000\n");
    data_error(read_table(&p, &opts(Some("d"))), "justdates.csv", &["no numeric columns"]);

    let p = write(&dir, "latin1.csv", b"a,b\n1,2\n3,\xe94\n");
    data_error(read_table(&p, &opts(None)), "latin1.csv", &[":3:", "not valid UTF-8"]);

    let p = write(&dir, "badgz.csv.gz", &[0x1f, 0x8b, 1, 2, 3]);
    data_error(read_table(&p, &opts(None)), "badgz.csv.gz", &["cannot read"]);
}

// ---------------------------------------------------------------- classification CSV

#[test]
fn labeled_rows_happy_paths() {
    let dir = TempDir::new().unwrap();
    let p = write(&dir, "cls.csv", b"t0,t1,t2,class\n0.5,1,2,up\n3,4,5,down\n");
    for label in ["class", "3", "-1"] {
        let r = read_labeled_rows(&p, None, b',', label).unwrap();
        assert_eq!(r.rows, [vec![0.5, 1.0, 2.0], vec![3.0, 4.0, 5.0]]);
        assert_eq!(r.labels, ["up", "down"]);
    }
    // Label first, no header, tab separated.
    let p = write(&dir, "ucr.tsv", b"1\t0.1\t0.2\n2\t0.3\t0.4\n");
    let r = read_labeled_rows(&p, None, b'\t', "0").unwrap();
    assert_eq!(r.rows, [vec![0.1, 0.2], vec![0.3, 0.4]]);
    assert_eq!(r.labels, ["1", "2"]);
}

#[test]
fn labeled_rows_errors() {
    let dir = TempDir::new().unwrap();
    let p = write(&dir, "cls.csv", b"a,b,label\n1,2,x\n1,oops,y\n");
    data_error(
        read_labeled_rows(&p, None, b',', "label"),
        "cls.csv",
        &[":3:", "column \"b\": \"oops\" is not a number"],
    );
    data_error(
        read_labeled_rows(&p, None, b',', "kind"),
        "cls.csv",
        &["column \"kind\" does not exist (columns: a, b, label)"],
    );
    let p = write(&dir, "nolabel.csv", b"a,label\n1,x\n2,\n");
    data_error(read_labeled_rows(&p, None, b',', "label"), "nolabel.csv", &[":3:", "empty label"]);
    let p = write(&dir, "onlylabel.csv", b"label\nx\n");
    data_error(read_labeled_rows(&p, None, b',', "label"), "onlylabel.csv", &["no value columns"]);
    let p = write(&dir, "ragged.csv", b"1,2,a\n1,2,3,b\n");
    data_error(read_labeled_rows(&p, None, b',', "-1"), "ragged.csv", &[":2:", "expected 3 fields, found 4"]);
    let p = write(&dir, "inf.csv", b"1,-inf,a\n");
    data_error(read_labeled_rows(&p, None, b',', "2"), "inf.csv", &[":1:", "column \"col1\"", "infinite"]);
}

// ---------------------------------------------------------------- .ts

const TS_UNIVARIATE: &str = "# a comment\n\
@problemName Tiny\n\
@timeStamps false\n\
@missing false\n\
@univariate true\n\
@equalLength true\n\
@seriesLength 3\n\
@classLabel true a b\n\
@data\n\
1,2,3:a\n\
4, 5 ,6:b\n";

#[test]
fn ts_univariate_and_multivariate() {
    let dir = TempDir::new().unwrap();
    let p = write(&dir, "tiny.ts", TS_UNIVARIATE.as_bytes());
    let d = read_ts(&p).unwrap();
    assert_eq!(d.problem.as_deref(), Some("Tiny"));
    assert_eq!(d.series, [vec![vec![1.0, 2.0, 3.0]], vec![vec![4.0, 5.0, 6.0]]]);
    assert_eq!(d.labels, ["a", "b"]);
    assert_eq!(d.class_labels, ["a", "b"]);

    // UEA style: two channels, variable length, keys in odd case, CRLF.
    let multi = "@ProblemName Multi\r\n@UNIVARIATE false\r\n@dimensions 2\r\n@equalLength False\r\n\
                 @classLabel true x y\r\n@DATA\r\n1,2:3,4:x\r\n\r\n5,6,7:8,9,10:y\r\n";
    let p = write(&dir, "multi.ts", multi.as_bytes());
    let d = read_ts(&p).unwrap();
    assert_eq!(d.series[0], [vec![1.0, 2.0], vec![3.0, 4.0]]);
    assert_eq!(d.series[1], [vec![5.0, 6.0, 7.0], vec![8.0, 9.0, 10.0]]);
    assert_eq!(d.labels, ["x", "y"]);

    // Regression file: the target is kept as the label text.
    let reg = "@problemName R\n@univariate true\n@classLabel false\n@targetLabel true\n@data\n1,2:0.5\n";
    let p = write(&dir, "reg.ts", reg.as_bytes());
    let d = read_ts(&p).unwrap();
    assert_eq!(d.labels, ["0.5"]);
    assert!(d.class_labels.is_empty());
}

#[test]
fn ts_errors() {
    let dir = TempDir::new().unwrap();
    let case = |name: &str, body: &str, parts: &[&str]| {
        let p = write(&dir, name, TS_UNIVARIATE.replace("4, 5 ,6:b\n", body).as_bytes());
        data_error(read_ts(&p), name, parts);
    };
    case("missing.ts", "4,?,6:b\n", &[":11:", "missing values are not supported"]);
    case("label.ts", "4,5,6:c\n", &[":11:", "label \"c\" is not one of the @classLabel values (a, b)"]);
    case("short.ts", "4,5:b\n", &[":11:", "expected series length 3", "found 2"]);
    case("number.ts", "4,x,6:b\n", &[":11:", "\"x\" is not a number"]);
    case("channels.ts", "4,5,6:1,2,3:b\n", &[":11:", "expected 1 channels, found 2"]);
    case("emptychan.ts", "4,5,6::b\n", &[":11:", "channel 1 is empty"]);
    case("nocolon.ts", "4,5,6\n", &[":11:", "found no ':'"]);

    let unequal = "@univariate false\n@equalLength false\n@classLabel true a\n@data\n1,2:3:a\n";
    let p = write(&dir, "unequal.ts", unequal.as_bytes());
    data_error(read_ts(&p), "unequal.ts", &[":5:", "channel 1 has 1 values but channel 0 has 2"]);

    let varying = "@equalLength false\n@classLabel true a\n@data\n1,2:3,4:a\n1:a\n";
    let p = write(&dir, "varying.ts", varying.as_bytes());
    data_error(read_ts(&p), "varying.ts", &[":5:", "expected 2 channels as in the first example, found 1"]);

    let p = write(&dir, "nodata.ts", b"@problemName X\n@classLabel true a\n");
    data_error(read_ts(&p), "nodata.ts", &["no @data line"]);
    let p = write(&dir, "noexamples.ts", b"@classLabel true a\n@data\n\n");
    data_error(read_ts(&p), "noexamples.ts", &["no examples after @data"]);
    let p = write(&dir, "early.ts", b"@classLabel true a\n1,2:a\n@data\n");
    data_error(read_ts(&p), "early.ts", &[":2:", "data before the @data line"]);
    let p = write(&dir, "stamps.ts", b"@timeStamps true\n@data\n");
    data_error(read_ts(&p), "stamps.ts", &[":1:", "@timeStamps true is not supported"]);
    let p = write(&dir, "flag.ts", b"@univariate maybe\n@data\n");
    data_error(read_ts(&p), "flag.ts", &[":1:", "needs true or false"]);
    let p = write(&dir, "empty.ts", b"");
    data_error(read_ts(&p), "empty.ts", &["file is empty"]);
    data_error(read_ts(&dir.path().join("gone.ts")), "gone.ts", &["cannot read: No such file or directory"]);
}

#[test]
fn ts_real_gunpoint_and_italy_power_demand() {
    if let Some(p) = shared("gunpoint/GunPoint_TRAIN.ts") {
        let d = read_ts(&p).unwrap();
        assert_eq!(d.problem.as_deref(), Some("GunPoint"));
        assert_eq!(d.series.len(), 50);
        assert!(d.series.iter().all(|ex| ex.len() == 1 && ex[0].len() == 150));
        assert_eq!(d.class_labels, ["1", "2"]);
        assert_eq!(d.labels.len(), 50);
    }
    if let Some(p) = shared("italy-power-demand/ItalyPowerDemand_TRAIN.ts") {
        let d = read_ts(&p).unwrap();
        assert_eq!(d.series.len(), 67);
        assert!(d.series.iter().all(|ex| ex.len() == 1 && ex[0].len() == 24));
        assert_eq!(d.class_labels.len(), 2);
    }
}

// ---------------------------------------------------------------- IDX

fn idx_bytes(type_byte: u8, dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, type_byte, dims.len() as u8];
    for d in dims {
        b.extend_from_slice(&d.to_be_bytes());
    }
    b.extend_from_slice(data);
    b
}

#[test]
fn idx_plain_and_gzip() {
    let dir = TempDir::new().unwrap();
    let data: Vec<u8> = (0..2 * 2 * 3).map(|v| v as u8 * 20).collect();
    let raw = idx_bytes(8, &[2, 2, 3], &data);
    let p = write(&dir, "images-idx3-ubyte", &raw);
    let idx = read_idx(&p).unwrap();
    assert_eq!(idx.dims, [2, 2, 3]);
    assert_eq!(idx.data, data);
    let gz = write(&dir, "images-idx3-ubyte.gz", &gzip(&raw));
    assert_eq!(read_idx(&gz).unwrap(), idx);

    let labels = read_idx(&write(&dir, "labels", &idx_bytes(8, &[2], &[7, 1]))).unwrap();
    let (seqs, ys) = mnist_sequences(&idx, &labels, false).unwrap();
    assert_eq!(ys, [7, 1]);
    assert_eq!(seqs.len(), 2);
    assert_eq!(seqs[0].len(), 6);
    assert_eq!(seqs[1][5], 220.0 / 255.0);
    assert!(seqs.iter().flatten().all(|&v| (0.0..=1.0).contains(&v)));
    assert_eq!(mnist_shape(&idx, false).unwrap(), (2, 3));
    assert_eq!(mnist_shape(&idx, true).unwrap(), (6, 1));
    assert_eq!(mnist_sequences(&idx, &labels, true).unwrap().0, seqs);

    let three = Idx { dims: vec![3], data: vec![0, 1, 2] };
    let err = mnist_sequences(&idx, &three, false).unwrap_err().to_string();
    assert!(err.contains("2 labels") && err.contains('3'), "{err}");
    assert!(mnist_sequences(&labels, &labels, false).is_err());
}

#[test]
fn idx_errors() {
    let dir = TempDir::new().unwrap();
    let p = write(&dir, "float.idx", &idx_bytes(0x0D, &[1], &[0, 0, 0, 0]));
    data_error(read_idx(&p), "float.idx", &["IDX type 0x0d (f32) is not supported", "0x08"]);
    let p = write(&dir, "cut.idx", &idx_bytes(8, &[10, 28, 28], &[0; 100]));
    data_error(read_idx(&p), "cut.idx", &["expected 7840 bytes, found 100"]);
    let p = write(&dir, "long.idx", &idx_bytes(8, &[2], &[1, 2, 3]));
    data_error(read_idx(&p), "long.idx", &["expected 2 bytes, found 3"]);
    let p = write(&dir, "magic.idx", b"PK\x03\x04rest");
    data_error(read_idx(&p), "magic.idx", &["not an IDX file"]);
    let p = write(&dir, "head.idx", &[0, 0, 8, 3, 0, 0, 0, 1]);
    data_error(read_idx(&p), "head.idx", &["truncated IDX header", "16 bytes, found 8"]);
    let p = write(&dir, "tiny.idx", &[0, 0]);
    data_error(read_idx(&p), "tiny.idx", &["truncated IDX header"]);
    let p = write(&dir, "zero.idx", &[0, 0, 8, 0]);
    data_error(read_idx(&p), "zero.idx", &["0 dimensions"]);
    let p = write(&dir, "empty.idx", b"");
    data_error(read_idx(&p), "empty.idx", &["file is empty"]);
    let p = write(&dir, "cut.idx.gz", &gzip(&idx_bytes(8, &[4], &[1, 2]))[..20]);
    data_error(read_idx(&p), "cut.idx.gz", &["cannot read"]);
}

#[test]
fn idx_real_mnist_test_set() {
    let (Some(images), Some(labels)) =
        (shared("mnist/t10k-images-idx3-ubyte.gz"), shared("mnist/t10k-labels-idx1-ubyte.gz"))
    else {
        return;
    };
    let images = read_idx(&images).unwrap();
    let labels = read_idx(&labels).unwrap();
    assert_eq!(images.dims, [10000, 28, 28]);
    assert_eq!(labels.dims, [10000]);
    let (seqs, ys) = mnist_sequences(&images, &labels, true).unwrap();
    assert_eq!(seqs.len(), 10000);
    assert_eq!(seqs[0].len(), 784);
    assert!(ys.iter().all(|&y| y < 10));
    assert_eq!(ys[0], 7, "the first t10k digit is a 7");
}

// ---------------------------------------------------------------- tokens and vocabularies

#[test]
fn token_examples_tsv_and_csv() {
    let dir = TempDir::new().unwrap();
    let p = write(&dir, "dna.tsv", b"label\tseq\n1\tACGT\n0\tTTA\n");
    let ex = read_token_examples(&p, None, None, "label", "seq", TokenSplit::Chars).unwrap();
    assert_eq!(ex.len(), 2);
    assert_eq!((ex.examples[0].label.as_str(), ex.examples[0].line), ("1", 2));
    assert_eq!(ex.tokens_of(0), ["A", "C", "G", "T"]);
    assert_eq!((ex.examples[1].label.as_str(), ex.examples[1].line), ("0", 3));
    assert_eq!(ex.tokens_of(1), ["T", "T", "A"]);
    // Each distinct token is stored once.
    assert_eq!(ex.tokens, ["A", "C", "G", "T"]);
    // No header, columns by index, words, quoted commas inside the text.
    let p = write(&dir, "sent.csv", b"pos,\"good movie, really\"\nneg,bad\n");
    let ex = read_token_examples(&p, None, None, "0", "1", TokenSplit::Whitespace).unwrap();
    assert_eq!(ex.examples[0].label, "pos");
    assert_eq!(ex.tokens_of(0), ["good", "movie,", "really"]);
    assert_eq!(ex.tokens_of(1), ["bad"]);
}

#[test]
fn token_examples_errors() {
    let dir = TempDir::new().unwrap();
    let p = write(&dir, "t.tsv", b"label\tseq\n1\tACGT\n0\t\n");
    data_error(
        read_token_examples(&p, None, None, "label", "seq", TokenSplit::Chars),
        "t.tsv",
        &[":3:", "column \"seq\": empty text"],
    );
    data_error(
        read_token_examples(&p, None, None, "label", "text", TokenSplit::Chars),
        "t.tsv",
        &["column \"text\" does not exist (columns: label, seq)"],
    );
    let p = write(&dir, "r.tsv", b"label\tseq\n1\tACGT\textra\n");
    data_error(
        read_token_examples(&p, None, None, "label", "seq", TokenSplit::Chars),
        "r.tsv",
        &[":2:", "expected 2 fields, found 3"],
    );
    let p = write(&dir, "l.csv", b"label,seq\n,AC\n");
    data_error(
        read_token_examples(&p, None, None, "label", "seq", TokenSplit::Chars),
        "l.csv",
        &[":2:", "empty label"],
    );
    let err = read_token_examples(&p, None, None, "label", "0", TokenSplit::Chars).unwrap_err();
    assert!(matches!(err, Error::Config { .. }), "{err}");
}

#[test]
fn vocab_build_encode_decode_and_serde() {
    let toks = ["b", "a", "b", "c", "a"];
    let v = Vocab::build(toks, &["<pad>", "<unk>"]);
    assert_eq!(v.tokens, ["<pad>", "<unk>", "b", "a", "c"]);
    assert_eq!(v.len(), 5);
    assert_eq!(v.id("a"), Some(3));
    assert_eq!(v.id("z"), None);
    assert_eq!(v.token(2), Some("b"));
    assert_eq!(v.encode(["c", "a", "z"], Some(1)).unwrap(), [4, 3, 1]);
    let err = v.encode(["c", "zebra"], None).unwrap_err();
    assert!(matches!(err, Error::Config { .. }) && err.to_string().contains("zebra"), "{err}");
    assert!(v.encode(["a"], Some(9)).is_err());
    assert_eq!(v.decode(&[2, 3]).unwrap(), ["b", "a"]);
    assert!(matches!(v.decode(&[0, 5]).unwrap_err(), Error::Token { token: 5, position: 1, vocab: 5 }));
    // A reserved token that also occurs in the data keeps its reserved id.
    let v2 = Vocab::build(["<unk>", "x"], &["<pad>", "<unk>"]);
    assert_eq!(v2.tokens, ["<pad>", "<unk>", "x"]);

    let json = serde_json::to_string(&v).unwrap();
    let back: Vocab = serde_json::from_str(&json).unwrap();
    assert_eq!(back, v);
}

// ---------------------------------------------------------------- text

#[test]
fn text_files() {
    let dir = TempDir::new().unwrap();
    let p = write(&dir, "t.txt", "hello\nwörld\n".as_bytes());
    let text = read_text(&p).unwrap();
    assert_eq!(text, "hello\nwörld\n");
    let gz = write(&dir, "t.txt.gz", &gzip(text.as_bytes()));
    assert_eq!(read_text(&gz).unwrap(), text);
    let bom = write(&dir, "bom.txt", b"\xef\xbb\xbfab");
    assert_eq!(read_text(&bom).unwrap(), "ab");

    let v = char_vocab(&text);
    assert_eq!(v.tokens, ["\n", "d", "e", "h", "l", "o", "r", "w", "ö"]);
    let ids = v.encode_chars("hold", None).unwrap();
    assert_eq!(ids, [3, 5, 4, 1]);
    assert!(v.encode_chars("hx", None).unwrap_err().to_string().contains("\"x\""));
    assert_eq!(v.encode_chars("hx", Some(0)).unwrap(), [3, 0]);

    let p = write(&dir, "bad.txt", b"line one\nline two\nab\xffc\n");
    data_error(read_text(&p), "bad.txt", &[":3:", "invalid UTF-8 at byte offset 20"]);
    let p = write(&dir, "empty.txt", b"");
    data_error(read_text(&p), "empty.txt", &["file is empty"]);
    data_error(read_text(&dir.path().join("nope.txt")), "nope.txt", &["cannot read: No such file or directory"]);
}

#[test]
fn text_real_corpora() {
    if let Some(p) = shared("war-and-peace/warandpeace.txt.gz") {
        let text = read_text(&p).unwrap();
        assert!(text.len() > 3_000_000, "{} bytes", text.len());
        let v = char_vocab(&text);
        assert!(v.len() > 50 && v.len() < 200, "{} chars", v.len());
        let head: String = text.chars().take(1000).collect();
        assert_eq!(v.encode_chars(&head, None).unwrap().len(), 1000);
    }
    if let Some(p) = shared("tinyshakespeare/input.txt") {
        let text = read_text(&p).unwrap();
        assert_eq!(char_vocab(&text).len(), 65, "the classic 65-character vocabulary");
    }
}

// ---------------------------------------------------------------- real CSV data

#[test]
fn csv_real_data_sets() {
    if let Some(p) = shared("airline-passengers/airline-passengers.csv") {
        let t = read_table(&p, &opts(Some("Month"))).unwrap();
        assert_eq!(t.rows(), 144);
        assert_eq!(t.column("Passengers").unwrap()[0], 112.0);
        assert_eq!(t.dates.as_ref().unwrap()[143], "1960-12");
    }
    if let Some(p) = shared("daily-min-temperatures/daily-min-temperatures.csv") {
        let t = read_table(&p, &opts(Some("Date"))).unwrap();
        assert!(t.rows() > 3600);
        assert_eq!(t.column("Temp").unwrap()[0], 20.7);
    }
    if let Some(p) = shared("etth1/ETTh1.csv") {
        let t = read_table(&p, &opts(Some("date"))).unwrap();
        assert_eq!(t.names, ["HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT"]);
        assert_eq!(t.rows(), 17420);
    }
    if let Some(p) = shared("mackey-glass/MackeyGlass_t17.txt") {
        let t = read_table(&p, &opts(None)).unwrap();
        assert_eq!(t.names, ["col0"]);
        assert_eq!(t.rows(), 10000);
    }
    if let Some(p) = shared("macrodata/macrodata.csv") {
        let t = read_table(&p, &opts(None)).unwrap();
        assert_eq!(t.names.len(), 14);
        assert!(t.column("realgdp").is_ok());
    }
    if let Some(p) = shared("beijing-pm25/pollution.csv.gz") {
        // Missing readings are written "NA": refused with line and column.
        data_error(
            read_table(&p, &opts(None)),
            "pollution.csv.gz",
            &[":2:", "column \"pm2.5\": \"NA\" is not a number"],
        );
    }
    if let Some(p) = shared("sklearn-digits/digits.csv.gz") {
        let r = read_labeled_rows(&p, None, b',', "-1").unwrap();
        assert_eq!(r.rows.len(), 1797);
        assert!(r.rows.iter().all(|row| row.len() == 64));
        assert!(r.labels.iter().all(|l| l.len() == 1));
    }
}

// ---------------------------------------------------------------- synthetic tasks

fn autocorrelation(xs: &[f64], lag: usize) -> f64 {
    let mean = xs.iter().sum::<f64>() / xs.len() as f64;
    let var: f64 = xs.iter().map(|x| (x - mean).powi(2)).sum();
    let cov: f64 = xs.windows(lag + 1).map(|w| (w[0] - mean) * (w[lag] - mean)).sum();
    cov / var
}

#[test]
fn mackey_glass_series() {
    let xs = mackey_glass(2000, 17, &mut ChaCha8Rng::seed_from_u64(0)).unwrap();
    assert_eq!(xs.len(), 2000);
    assert!(xs.iter().all(|&x| x > 0.0 && x < 1.5), "out of (0, 1.5)");
    let (lo, hi) = xs.iter().fold((f64::MAX, f64::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
    // The reference file (tanh(x - 1) of the same equation) spans about
    // x = 0.41 .. 1.32.
    assert!(lo < 0.6 && hi > 1.2, "range {lo}..{hi}");
    assert!(autocorrelation(&xs, 1) > 0.9);
    // Same seed, same series; another seed, another (chaotic) series.
    assert_eq!(xs, mackey_glass(2000, 17, &mut ChaCha8Rng::seed_from_u64(0)).unwrap());
    let other = mackey_glass(2000, 17, &mut ChaCha8Rng::seed_from_u64(1)).unwrap();
    assert!(xs.iter().zip(&other).any(|(a, b)| (a - b).abs() > 0.1));
    // Statistics of the shipped reference series (SOURCE.md: tanh(x - 1)
    // of the tau = 17 solution, mean -0.066, range -0.528..0.311): the
    // integration reproduces the same attractor.
    let long = mackey_glass(10_000, 17, &mut ChaCha8Rng::seed_from_u64(5)).unwrap();
    let squashed: Vec<f64> = long.iter().map(|x| (x - 1.0).tanh()).collect();
    let mean = squashed.iter().sum::<f64>() / squashed.len() as f64;
    let (lo, hi) = squashed.iter().fold((f64::MAX, f64::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
    assert!((mean + 0.066).abs() < 0.01, "mean {mean}");
    assert!((lo + 0.528).abs() < 0.02 && (hi - 0.311).abs() < 0.02, "range {lo}..{hi}");
    assert!(mackey_glass(10, 30, &mut ChaCha8Rng::seed_from_u64(0)).is_ok());
    let err = mackey_glass(10, 0, &mut ChaCha8Rng::seed_from_u64(0)).unwrap_err();
    assert!(matches!(err, Error::Config { .. }) && err.to_string().contains("tau"), "{err}");
}

#[test]
fn adding_problem_layout() {
    let (n, len) = (64, 11);
    let (x, y) = adding_problem(n, len, &mut ChaCha8Rng::seed_from_u64(3)).unwrap();
    assert_eq!(x.len(), n * len * 2);
    assert_eq!(y.len(), n);
    for (seq, &target) in x.chunks_exact(len * 2).zip(&y) {
        let marks: Vec<usize> = (0..len).filter(|&t| seq[2 * t + 1] == 1.0).collect();
        assert_eq!(marks.len(), 2);
        assert!(marks[0] < len / 2 && marks[1] >= len / 2);
        assert!((0..len).all(|t| seq[2 * t + 1] == 0.0 || seq[2 * t + 1] == 1.0));
        assert!((0..len).all(|t| (0.0..1.0).contains(&seq[2 * t])));
        assert_eq!(target, seq[2 * marks[0]] + seq[2 * marks[1]]);
    }
    assert!(adding_problem(1, 2, &mut ChaCha8Rng::seed_from_u64(0)).is_ok());
    let err = adding_problem(1, 1, &mut ChaCha8Rng::seed_from_u64(0)).unwrap_err();
    assert!(matches!(err, Error::Config { .. }) && err.to_string().contains("len = 1"), "{err}");
}

#[test]
fn copy_task_layout() {
    let (n, len, delay, symbols) = (5, 4, 6, 8);
    let (tok, tgt, t, vocab) = copy_task(n, len, delay, symbols, &mut ChaCha8Rng::seed_from_u64(4)).unwrap();
    assert_eq!(t, 2 * len + delay);
    assert_eq!(vocab, symbols + 2);
    assert_eq!(tok.len(), n * t);
    assert_eq!(tgt.len(), n * t);
    let (blank, go) = (symbols, symbols + 1);
    for (seq, target) in tok.chunks_exact(t).zip(tgt.chunks_exact(t)) {
        assert!(seq[..len].iter().all(|&s| s < symbols));
        assert!(seq[len..len + delay - 1].iter().all(|&s| s == blank));
        assert_eq!(seq[len + delay - 1], go);
        assert!(seq[len + delay..].iter().all(|&s| s == blank));
        assert!(target[..len + delay].iter().all(|&v| v == recurrent::IGNORE_INDEX));
        let copied: Vec<usize> = target[len + delay..].iter().map(|&v| v as usize).collect();
        assert_eq!(copied, seq[..len]);
    }
    for (len, delay, symbols, what) in [(0, 1, 1, "len"), (1, 0, 1, "delay"), (1, 1, 0, "symbols")] {
        let err = copy_task(1, len, delay, symbols, &mut ChaCha8Rng::seed_from_u64(0)).unwrap_err();
        assert!(matches!(err, Error::Config { .. }) && err.to_string().contains(what), "{err}");
    }
}
