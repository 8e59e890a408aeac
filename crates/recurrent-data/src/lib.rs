//! Data loaders: every file format the examples and the CLI read, plus the
//! synthetic tasks used to test what a recurrent network can remember.
//!
//! - [`csv_table`]: numeric CSV tables for forecasting ([`read_table`]) and
//!   one-sequence-per-row classification CSVs ([`read_labeled_rows`]);
//! - [`ts`]: UCR/UEA `.ts` time-series classification files ([`read_ts`]);
//! - [`idx`]: IDX files such as MNIST ([`read_idx`], [`mnist_sequences`]);
//! - [`text`]: plain text for character language models ([`read_text`]),
//!   labelled token sequences ([`read_token_examples`]) and [`Vocab`];
//! - [`synthetic`]: Mackey-Glass, the adding problem and the copy task.
//!
//! Every reader accepts gzip-compressed input transparently (recognised by
//! its magic bytes, not its extension, so a renamed file still works), and
//! every malformed input is reported as [`Error::Data`]
//! naming the file, the 1-based line where there is one, and the problem.

pub mod csv_table;
pub mod idx;
pub mod synthetic;
pub mod text;
pub mod ts;

pub use csv_table::{read_labeled_rows, read_table, CsvOptions, LabeledRows, Table};
pub use idx::{mnist_sequences, mnist_shape, read_idx, Idx};
pub use synthetic::{adding_problem, copy_task, mackey_glass};
pub use text::{char_vocab, read_text, read_token_examples, TokenSplit, Vocab};
pub use ts::{read_ts, TsData};

use recurrent::error::{data_err, Error, Result};
use std::fs::File;
use std::io::{BufReader, Read, Seek};
use std::path::Path;

/// The two bytes every gzip stream starts with (RFC 1952).
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Turns an I/O error into the problem text of a data error. The OS code
/// suffix (" (os error 2)") is dropped: the user wants "No such file or
/// directory", not the errno.
pub(crate) fn io_problem(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error ") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

/// The error for a file that cannot be opened or read.
pub(crate) fn read_err(path: &Path, e: &std::io::Error) -> Error {
    data_err(path, None, format!("cannot read: {}", io_problem(e)))
}

/// Opens `path` as a byte stream, decompressing it when it starts with the
/// gzip magic bytes. Peeking (rather than trusting the extension) lets the
/// same loader read `x.csv`, `x.csv.gz` and a gzip file without a suffix.
pub(crate) fn open_maybe_gz(path: &Path) -> Result<Box<dyn Read>> {
    let mut file = File::open(path).map_err(|e| read_err(path, &e))?;
    let mut head = Vec::with_capacity(2);
    (&mut file).take(2).read_to_end(&mut head).map_err(|e| read_err(path, &e))?;
    // Rewind instead of chaining the peeked bytes in front: a chain hands
    // out those two bytes as a read of their own, which defeats readers
    // that look at the start of their first buffer (the csv crate strips a
    // byte-order mark only when all three bytes arrive together).
    file.rewind().map_err(|e| read_err(path, &e))?;
    let reader = BufReader::new(file);
    if head == GZIP_MAGIC {
        // MultiGzDecoder so that concatenated gzip members (as written by
        // `cat a.gz b.gz` or bgzip) are read whole instead of stopping
        // after the first member.
        Ok(Box::new(flate2::read::MultiGzDecoder::new(reader)))
    } else {
        Ok(Box::new(reader))
    }
}

/// Reads a whole file into memory (decompressed when gzip). A corrupt gzip
/// stream surfaces here as an I/O error and is reported as unreadable.
pub(crate) fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    let mut reader = open_maybe_gz(path)?;
    let mut bytes = Vec::new();
    reader.read_to_end(&mut bytes).map_err(|e| read_err(path, &e))?;
    Ok(bytes)
}

/// Parses one numeric field, refusing empty fields, non-numbers and
/// non-finite values. `what` names the field for the message (for example
/// `column "temp"`). Rust's `f64` parser accepts "NaN" and "inf", so the
/// finiteness check is what rejects them.
pub(crate) fn parse_finite(path: &Path, line: usize, what: &str, field: &str) -> Result<f64> {
    let field = field.trim();
    if field.is_empty() {
        return Err(data_err(path, Some(line), format!("{what}: empty field")));
    }
    let value: f64 =
        field.parse().map_err(|_| data_err(path, Some(line), format!("{what}: \"{field}\" is not a number")))?;
    if value.is_nan() {
        return Err(data_err(path, Some(line), format!("{what}: NaN")));
    }
    if value.is_infinite() {
        return Err(data_err(path, Some(line), format!("{what}: infinite value \"{field}\"")));
    }
    Ok(value)
}
