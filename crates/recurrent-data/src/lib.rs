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

pub use csv_table::{read_labeled_rows, read_table, CsvOptions, LabeledRows, Table, MAX_FIELDS, MAX_LINE_BYTES};
pub use idx::{mnist_sequences, mnist_shape, read_idx, Idx};
pub use synthetic::{adding_problem, copy_task, mackey_glass};
pub use text::{char_vocab, read_text, read_token_examples, TokenExample, TokenExamples, TokenSplit, Vocab};
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

/// Largest number of bytes a gzip stream may expand to, per byte of the
/// compressed file on disk, when nothing else bounds it (CSV, .ts, text).
/// Real data compresses 3 to 20 times; a stream that expands further is
/// refused (a "zip bomb" would otherwise take all memory). Decompress such a
/// file first to read it anyway.
pub const MAX_GZIP_RATIO: u64 = 64;

/// The expansion allowed to any gzip file regardless of its size, so that
/// small, very repetitive files still load.
pub const MIN_GZIP_ALLOWANCE: u64 = 64 << 20;

/// Checks that `path` is a regular file (following symbolic links) and
/// returns its size on disk. Directories, FIFOs, sockets and devices are
/// refused before they are opened: opening a FIFO would block until a
/// writer appears, and a device may never end.
pub fn regular_file_size(path: &Path) -> Result<u64> {
    let meta = std::fs::metadata(path).map_err(|e| read_err(path, &e))?;
    if meta.is_file() {
        return Ok(meta.len());
    }
    let kind = if meta.is_dir() {
        "a directory".to_string()
    } else {
        #[cfg(unix)]
        {
            use std::os::unix::fs::FileTypeExt;
            let t = meta.file_type();
            if t.is_fifo() {
                "a FIFO (named pipe)".to_string()
            } else if t.is_socket() {
                "a socket".to_string()
            } else if t.is_block_device() || t.is_char_device() {
                "a device".to_string()
            } else {
                "not a regular file".to_string()
            }
        }
        #[cfg(not(unix))]
        {
            "not a regular file".to_string()
        }
    };
    Err(data_err(path, None, format!("is {kind}; a data file must be a regular file")))
}

/// An opened input: the byte stream (decompressed when gzip), whether it is
/// gzip, and the size of the file on disk.
pub(crate) struct Opened {
    pub reader: Box<dyn Read>,
    pub gzip: bool,
    pub disk_size: u64,
}

/// Opens `path` as a byte stream, decompressing it when it starts with the
/// gzip magic bytes. Peeking (rather than trusting the extension) lets the
/// same loader read `x.csv`, `x.csv.gz` and a gzip file without a suffix.
/// Only regular files are opened ([`regular_file_size`]).
pub(crate) fn open_maybe_gz(path: &Path) -> Result<Opened> {
    let disk_size = regular_file_size(path)?;
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
        Ok(Opened { reader: Box::new(flate2::read::MultiGzDecoder::new(reader)), gzip: true, disk_size })
    } else {
        Ok(Opened { reader: Box::new(reader), gzip: false, disk_size })
    }
}

/// The most bytes a gzip file of `disk_size` bytes may expand to
/// ([`MAX_GZIP_RATIO`], [`MIN_GZIP_ALLOWANCE`]).
pub fn gzip_allowance(disk_size: u64) -> u64 {
    disk_size.saturating_mul(MAX_GZIP_RATIO).max(MIN_GZIP_ALLOWANCE)
}

/// Reads at most `limit` bytes of `reader` into memory; `Ok(None)` when
/// the stream holds more. `hint` preallocates (a plain file's size, or a
/// size counted before): the extra byte that tells "more" is read on its
/// own, so a buffer of exactly `hint` bytes never grows.
pub(crate) fn read_at_most(path: &Path, reader: &mut dyn Read, limit: u64, hint: u64) -> Result<Option<Vec<u8>>> {
    let mut bytes = Vec::with_capacity(hint.min(limit).min(1 << 32) as usize);
    reader.take(limit).read_to_end(&mut bytes).map_err(|e| read_err(path, &e))?;
    let mut probe = [0u8; 1];
    let more = loop {
        match reader.read(&mut probe) {
            Ok(n) => break n > 0,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_err(path, &e)),
        }
    };
    Ok((!more).then_some(bytes))
}

/// Reads up to `n` bytes of `reader` (fewer only at the end of the stream).
pub(crate) fn read_up_to(path: &Path, reader: &mut dyn Read, n: u64) -> Result<Vec<u8>> {
    let mut bytes = Vec::with_capacity(n.min(1 << 16) as usize);
    reader.take(n).read_to_end(&mut bytes).map_err(|e| read_err(path, &e))?;
    Ok(bytes)
}

/// Reads a whole file into memory (decompressed when gzip). A corrupt gzip
/// stream surfaces here as an I/O error and is reported as unreadable. A
/// plain file takes its size in memory; a gzip stream may expand to
/// [`gzip_allowance`] of its size on disk and is refused beyond that.
pub(crate) fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    let mut opened = open_maybe_gz(path)?;
    if !opened.gzip {
        // A plain file that grows while it is read is read up to its size at
        // open plus the gzip allowance (a log being appended to); beyond that
        // it is refused.
        let limit = opened.disk_size.saturating_add(MIN_GZIP_ALLOWANCE);
        return read_at_most(path, &mut opened.reader, limit, opened.disk_size)?
            .ok_or_else(|| data_err(path, None, format!("the file grew past {limit} bytes while it was read")));
    }
    // gzip: a first pass counts the decompressed bytes without keeping them,
    // so a stream that expands too far is refused before anything is
    // allocated, and the second pass fills a buffer of exactly that size.
    let limit = gzip_allowance(opened.disk_size);
    let size = std::io::copy(&mut (&mut opened.reader).take(limit.saturating_add(1)), &mut std::io::sink())
        .map_err(|e| read_err(path, &e))?;
    if size > limit {
        return Err(data_err(
            path,
            None,
            format!(
                "gzip data expands to more than {limit} bytes ({MAX_GZIP_RATIO} times its {} bytes on disk): \
                 decompress it first if it is genuine",
                opened.disk_size
            ),
        ));
    }
    let mut again = open_maybe_gz(path)?;
    read_at_most(path, &mut again.reader, size, size)?
        .ok_or_else(|| data_err(path, None, "the file changed while it was read"))
}

/// At most this many characters of a value from a file are echoed in an
/// error message; longer ones end with an ellipsis.
pub const ECHO_CHARS: usize = 60;

/// A value from a file as an error message shows it: control characters
/// escaped (so no escape sequence reaches the terminal) and cut after
/// [`ECHO_CHARS`] characters with "...".
pub fn echo(value: &str) -> String {
    recurrent::error::echo(value, ECHO_CHARS)
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
    let value: f64 = field
        .parse()
        .map_err(|_| data_err(path, Some(line), format!("{what}: \"{}\" is not a number", echo(field))))?;
    if value.is_nan() {
        return Err(data_err(path, Some(line), format!("{what}: NaN")));
    }
    if value.is_infinite() {
        return Err(data_err(path, Some(line), format!("{what}: infinite value \"{}\"", echo(field))));
    }
    Ok(value)
}
