//! Typed errors of the library. Every variant names the values involved so a
//! caller can print one line that tells the user what to fix.

use thiserror::Error;

/// Everything the library can refuse.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum Error {
    /// A buffer does not have the shape the operation needs.
    #[error("shape mismatch for {what}: expected {expected}, got {got}")]
    Shape {
        /// The buffer or value.
        what: String,
        /// The shape it needs.
        expected: String,
        /// What it has.
        got: String,
    },

    /// A configuration value is outside its allowed range.
    #[error("invalid {what} = {}: {}", clean(value, ECHO_VALUE_CHARS), clean(reason, MAX_MESSAGE_CHARS))]
    Config {
        /// The setting.
        what: String,
        /// Its value.
        value: String,
        /// Why it is refused.
        reason: String,
    },

    /// A per-sequence length is 0 or longer than the padded length.
    #[error("invalid length {length} for sequence {index}: lengths must be in 1..={seq_len}")]
    Length {
        /// The sequence.
        index: usize,
        /// Its length.
        length: usize,
        /// The padded length.
        seq_len: usize,
    },

    /// A token id is outside the vocabulary.
    #[error("token {token} at position {position} is outside the vocabulary of size {vocab}")]
    Token {
        /// The token id.
        token: usize,
        /// Its flat position in the input.
        position: usize,
        /// The vocabulary size.
        vocab: usize,
    },

    /// A class target is outside 0..classes (and is not the ignore index).
    #[error("class target {target} at position {position} is outside 0..{classes}")]
    Class {
        /// The target.
        target: i64,
        /// Its flat position among the targets.
        position: usize,
        /// The number of classes.
        classes: usize,
    },

    /// A data file is missing, unreadable or malformed. `line` is 1-based.
    /// The path and the problem are shown with control characters escaped
    /// ([`clean`]), since both may come from untrusted files.
    #[error("{}{}: {}", clean(path, MAX_PATH_CHARS), line.map(|l| format!(":{l}")).unwrap_or_default(), clean(problem, MAX_MESSAGE_CHARS))]
    Data {
        /// The file.
        path: String,
        /// The 1-based line, when known.
        line: Option<usize>,
        /// What is wrong.
        problem: String,
    },

    /// A parameter name is unknown, or a named tensor has the wrong shape.
    #[error("parameter {}: {}", clean(name, ECHO_VALUE_CHARS), clean(problem, MAX_MESSAGE_CHARS))]
    Param {
        /// The parameter's name.
        name: String,
        /// What is wrong.
        problem: String,
    },

    /// A process of a distributed run failed, so every process stopped:
    /// `message` is that rank's error, `user` whether it is the user's to fix.
    /// Rank 0's own errors keep their words; others are prefixed with the rank.
    #[error("{}{message}", if *rank > 0 { format!("rank {rank}: ") } else { String::new() })]
    Rank {
        /// The failing rank.
        rank: usize,
        /// Its error.
        message: String,
        /// Whether the user can fix it.
        user: bool,
    },

    /// Training produced a non-finite loss or gradient and the NaN policy
    /// says stop.
    #[error("training diverged: {0}")]
    Diverged(String),

    /// A model, its training or a file's contents would need more memory
    /// than the limit allows (see [`crate::memory`]): `what` says what was
    /// estimated, `need` and `limit` are bytes.
    #[error("{} needs about {} but the memory limit is {}", clean(what, MAX_MESSAGE_CHARS), human_bytes(*need), human_bytes(*limit))]
    Memory {
        /// What was estimated.
        what: String,
        /// Bytes it needs.
        need: u128,
        /// Bytes allowed.
        limit: u128,
    },
}

/// Longest path shown in an error message (characters).
pub const MAX_PATH_CHARS: usize = 120;
/// Longest value from a file or flag shown in an error message.
pub const ECHO_VALUE_CHARS: usize = 60;
/// Longest problem text of one error.
pub const MAX_MESSAGE_CHARS: usize = 240;
/// Longest error line the command line prints.
pub const MAX_LINE_CHARS: usize = 300;

/// Text from outside (a file's field, a path, a flag's value) made safe to
/// print on one line: control characters (newlines, escape, NUL, DEL, the
/// C1 range) become `\n`, `\t`, `\r` or `\u{..}`, so no escape sequence
/// reaches a terminal and the line stays one line; then the text is cut
/// after `max` characters with "...".
pub fn clean(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(4 * max + 8));
    let mut count = 0;
    for c in text.chars() {
        if count >= max {
            out.push_str("...");
            return out;
        }
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
        count += 1;
    }
    out
}

/// A value from a file quoted in an error: [`clean`] at `max` characters.
pub fn echo(value: &str, max: usize) -> String {
    clean(value, max)
}

/// Bytes as a short human text (`512 B`, `3.2 MiB`, `1.5 TiB`).
pub fn human_bytes(bytes: u128) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// The library's result type.
pub type Result<T> = std::result::Result<T, Error>;

/// Shorthand for a shape error.
pub fn shape_err(what: impl Into<String>, expected: impl ToString, got: impl ToString) -> Error {
    Error::Shape { what: what.into(), expected: expected.to_string(), got: got.to_string() }
}

/// Shorthand for a configuration error.
pub fn config_err(what: impl Into<String>, value: impl ToString, reason: impl Into<String>) -> Error {
    Error::Config { what: what.into(), value: value.to_string(), reason: reason.into() }
}

/// Text of a shape for an error message, built only when the error happens
/// (checks run on every step, so they must not format strings).
pub trait ShapeText {
    /// The text.
    fn text(self) -> String;
}
impl ShapeText for &str {
    fn text(self) -> String {
        self.to_string()
    }
}
impl ShapeText for &String {
    fn text(self) -> String {
        self.clone()
    }
}
impl<T: FnOnce() -> String> ShapeText for T {
    fn text(self) -> String {
        self()
    }
}

/// Checks that a buffer holds exactly `expected` elements.
pub fn check_len(what: &str, len: usize, expected: usize, shape: impl ShapeText) -> Result<()> {
    if len != expected {
        return Err(shape_err(what, format!("{} = {expected} elements", shape.text()), format!("{len} elements")));
    }
    Ok(())
}

/// Shorthand for a data error at a file (and optionally a 1-based line).
pub fn data_err(path: impl AsRef<std::path::Path>, line: Option<usize>, problem: impl Into<String>) -> Error {
    Error::Data { path: path.as_ref().display().to_string(), line, problem: problem.into() }
}

impl Error {
    /// Whether the error is the user's to fix (bad data, bad configuration,
    /// shapes, lengths, tokens, classes, parameters): the command line exits
    /// with status 2 for these, 1 for the rest.
    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            Error::Data { .. }
                | Error::Config { .. }
                | Error::Shape { .. }
                | Error::Length { .. }
                | Error::Token { .. }
                | Error::Class { .. }
                | Error::Param { .. }
                | Error::Memory { .. }
                | Error::Rank { user: true, .. }
                | Error::Diverged(_)
        )
    }
}
