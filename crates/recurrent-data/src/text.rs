//! Text: whole files for character language models ([`read_text`],
//! [`char_vocab`]), labelled token sequences such as DNA, proteins or short
//! sentences ([`read_token_examples`]), and the [`Vocab`] that maps tokens
//! to ids.

use super::csv_table::{find_column, missing_column, resolve_layout, scan_records, Layout};
use super::read_bytes;
use recurrent::error::{config_err, data_err, Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};
use std::path::Path;

recurrent::choice! {
    /// How a text field is cut into tokens.
    pub enum TokenSplit ("split") {
        /// One token per Unicode character (DNA, proteins, character models).
        Chars = "chars",
        /// Tokens separated by runs of whitespace (words).
        Whitespace = "whitespace",
    }
}

impl TokenSplit {
    /// Cuts `text` into owned tokens.
    pub fn split(self, text: &str) -> Vec<String> {
        match self {
            TokenSplit::Chars => text.chars().map(String::from).collect(),
            TokenSplit::Whitespace => text.split_whitespace().map(String::from).collect(),
        }
    }
}

/// A vocabulary: token `i` has id `i`.
///
/// Only the token list is stored (and serialized), so a saved vocabulary is
/// a plain JSON list that cannot fall out of step with an index; lookups
/// that run over many tokens build a map once ([`Vocab::index`],
/// [`Vocab::encode`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vocab {
    /// The tokens in id order.
    pub tokens: Vec<String>,
}

impl Vocab {
    /// Builds a vocabulary: the `reserve` tokens first (e.g. `"<pad>"` at id
    /// 0, `"<unk>"` at id 1), then every other token in order of first
    /// appearance. Deterministic for a given input, unlike the order of a
    /// hash set, so ids survive a rebuild from the same data.
    pub fn build<I, S>(tokens: I, reserve: &[&str]) -> Vocab
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut list = Vec::new();
        let mut add = |tok: &str| {
            if !seen.contains_key(tok) {
                seen.insert(tok.to_string(), list.len());
                list.push(tok.to_string());
            }
        };
        for tok in reserve {
            add(tok);
        }
        for tok in tokens {
            add(tok.as_ref());
        }
        Vocab { tokens: list }
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether there are no tokens.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The id of one token (a linear scan: use [`Vocab::index`] or
    /// [`Vocab::encode`] for many lookups).
    pub fn id(&self, tok: &str) -> Option<usize> {
        self.tokens.iter().position(|t| t == tok)
    }

    /// The token with id `id`.
    pub fn token(&self, id: usize) -> Option<&str> {
        self.tokens.get(id).map(String::as_str)
    }

    /// A token-to-id map (the first id wins if a token was listed twice).
    pub fn index(&self) -> HashMap<&str, usize> {
        let mut map = HashMap::with_capacity(self.tokens.len());
        for (i, t) in self.tokens.iter().enumerate() {
            map.entry(t.as_str()).or_insert(i);
        }
        map
    }

    /// Checks an unknown-token id against the vocabulary size.
    fn check_unk(&self, unk: Option<usize>) -> Result<()> {
        match unk {
            Some(u) if u >= self.tokens.len() => {
                Err(config_err("unk", u, format!("must be below the vocabulary size {}", self.tokens.len())))
            }
            _ => Ok(()),
        }
    }

    /// The error for a token outside the vocabulary with no fallback.
    fn unknown(&self, tok: &str) -> Error {
        config_err(
            "token",
            format!("\"{}\"", super::echo(tok)),
            format!("not in the vocabulary ({} tokens) and no unknown-token id was given", self.tokens.len()),
        )
    }

    /// Maps tokens to ids. An unknown token becomes `unk` when given, and is
    /// an [`Error::Config`] naming the token otherwise.
    pub fn encode<I, S>(&self, toks: I, unk: Option<usize>) -> Result<Vec<usize>>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.check_unk(unk)?;
        let index = self.index();
        toks.into_iter()
            .map(|t| {
                let t = t.as_ref();
                index.get(t).copied().or(unk).ok_or_else(|| self.unknown(t))
            })
            .collect()
    }

    /// Maps each character of `text` to the id of its one-character token,
    /// without allocating a string per character (the common case of a
    /// character language model over a multi-megabyte text).
    pub fn encode_chars(&self, text: &str, unk: Option<usize>) -> Result<Vec<usize>> {
        self.check_unk(unk)?;
        let mut index: HashMap<char, usize> = HashMap::new();
        for (i, t) in self.tokens.iter().enumerate() {
            let mut chars = t.chars();
            if let (Some(c), None) = (chars.next(), chars.next()) {
                index.entry(c).or_insert(i);
            }
        }
        text.chars().map(|c| index.get(&c).copied().or(unk).ok_or_else(|| self.unknown(&c.to_string()))).collect()
    }

    /// Maps ids back to tokens; an id outside the vocabulary is an
    /// [`Error::Token`] with its position.
    pub fn decode(&self, ids: &[usize]) -> Result<Vec<&str>> {
        ids.iter()
            .enumerate()
            .map(|(position, &id)| self.token(id).ok_or(Error::Token { token: id, position, vocab: self.tokens.len() }))
            .collect()
    }
}

/// The vocabulary of a character model: the distinct characters of `text`
/// sorted by code point (as char-rnn and nanoGPT's shakespeare_char do), so
/// the ids depend only on the character set, not on where each appears.
pub fn char_vocab(text: &str) -> Vocab {
    let chars: BTreeSet<char> = text.chars().collect();
    Vocab { tokens: chars.into_iter().map(String::from).collect() }
}

/// Reads a whole UTF-8 text file (gzip recognised by its magic bytes).
///
/// A missing or empty file is an error; so is invalid UTF-8, reported with
/// the line and the byte offset (in the decompressed text) of the first bad
/// byte, since a single stray Latin-1 byte is the usual culprit and hard to
/// find otherwise. A leading byte-order mark is dropped so that it does not
/// become a character of the vocabulary.
pub fn read_text(path: &Path) -> Result<String> {
    let bytes = read_bytes(path)?;
    if bytes.is_empty() {
        return Err(data_err(path, None, "file is empty"));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        let bytes = e.as_bytes();
        let offset = e.utf8_error().valid_up_to();
        let line = bytes[..offset].iter().filter(|&&b| b == b'\n').count() + 1;
        data_err(path, Some(line), format!("invalid UTF-8 at byte offset {offset} (byte {:#04x})", bytes[offset]))
    })?;
    Ok(match text.strip_prefix('\u{feff}') {
        Some(rest) => rest.to_string(),
        None => text,
    })
}

/// Labelled token sequences as [`read_token_examples`] returns them: each
/// distinct token is kept once, and examples hold 4-byte ids into that
/// list, so memory stays a few times the file's size however short the
/// tokens are.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenExamples {
    /// The distinct tokens, in order of first appearance in the file.
    pub tokens: Vec<String>,
    /// The examples, in file order.
    pub examples: Vec<TokenExample>,
}

/// One labelled token sequence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenExample {
    /// The 1-based line the example starts on.
    pub line: usize,
    /// The label as written (trimmed).
    pub label: String,
    /// The tokens, as indices into [`TokenExamples::tokens`].
    pub ids: Vec<u32>,
}

impl TokenExamples {
    /// Number of examples.
    pub fn len(&self) -> usize {
        self.examples.len()
    }

    /// Whether there are no examples.
    pub fn is_empty(&self) -> bool {
        self.examples.is_empty()
    }

    /// The tokens of example `i` as text.
    pub fn tokens_of(&self, i: usize) -> Vec<&str> {
        self.examples[i].ids.iter().map(|&t| self.tokens[t as usize].as_str()).collect()
    }
}

/// Header names that mark the first row of a token file as a header when
/// the columns are given by index: a label column called one of these...
const LABEL_NAMES: &[&str] = &["label", "labels", "class", "category", "target", "y", "sentiment"];
/// ... or a text column called one of these.
const TEXT_NAMES: &[&str] = &["text", "seq", "sequence", "sentence", "review", "tokens", "document", "x"];

/// Reads labelled token sequences from a CSV/TSV file: one example per row,
/// the label from `label_column` and the tokens from `text_column` (each a
/// name or 0-based index as a string) cut by `split`. Other columns are
/// ignored.
///
/// `delimiter: None` means a tab for a `.tsv` file (also `.tsv.gz`) and a
/// comma otherwise. `header: None` takes the first row as a header when a
/// column given by name (not by number) appears in it, or, with columns
/// given by number, when the first row's label field is a usual label
/// column name (label, class, category, target, y, sentiment) or its text
/// field a usual text column name (text, seq, sequence, sentence, review,
/// tokens, document, x), compared without case: label and text fields are
/// not numbers, so the numeric test of [`super::read_table`] cannot tell a
/// header here. An empty label or text is an error with its line.
pub fn read_token_examples(
    path: &Path,
    delimiter: Option<u8>,
    header: Option<bool>,
    label_column: &str,
    text_column: &str,
    split: TokenSplit,
) -> Result<TokenExamples> {
    let delimiter = delimiter.unwrap_or_else(|| {
        let name = path.file_name().map(|n| n.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
        if name.ends_with(".tsv") || name.ends_with(".tsv.gz") {
            b'\t'
        } else {
            b','
        }
    });
    let mut layout: Option<(Layout, usize, usize)> = None;
    let mut out = TokenExamples::default();
    let mut ids: HashMap<String, u32> = HashMap::new();
    let mut add = |layout: &(Layout, usize, usize), line: usize, fields: &csv::StringRecord| -> Result<()> {
        let (layout, label, text) = (&layout.0, layout.1, layout.2);
        let (label_text, body) = (&fields[label], &fields[text]);
        if label_text.is_empty() {
            return Err(data_err(
                path,
                Some(line),
                format!("column \"{}\": empty label", super::echo(&layout.names[label])),
            ));
        }
        let mut seq = Vec::new();
        let mut push = |tok: &str| -> Result<()> {
            let id = match ids.get(tok) {
                Some(&id) => id,
                None => {
                    let id = u32::try_from(out.tokens.len())
                        .map_err(|_| data_err(path, Some(line), "more than 2^32 distinct tokens"))?;
                    ids.insert(tok.to_string(), id);
                    out.tokens.push(tok.to_string());
                    id
                }
            };
            seq.push(id);
            Ok(())
        };
        match split {
            TokenSplit::Chars => {
                let mut buf = [0u8; 4];
                for c in body.chars() {
                    push(c.encode_utf8(&mut buf))?;
                }
            }
            TokenSplit::Whitespace => {
                for w in body.split_whitespace() {
                    push(w)?;
                }
            }
        }
        if seq.is_empty() {
            return Err(data_err(
                path,
                Some(line),
                format!("column \"{}\": empty text", super::echo(&layout.names[text])),
            ));
        }
        seq.shrink_to_fit();
        out.examples.push(TokenExample { line, label: label_text.to_string(), ids: seq });
        Ok(())
    };
    scan_records(path, delimiter, |line, fields| {
        if let Some(l) = layout.as_ref() {
            return add(l, line, fields);
        }
        let first: Vec<String> = fields.iter().map(str::to_string).collect();
        let has_header = header.unwrap_or_else(|| {
            let by_name = [label_column, text_column]
                .iter()
                .any(|spec| spec.parse::<i64>().is_err() && first.iter().any(|f| f == spec));
            let field = |spec: &str| {
                find_column(&(0..first.len()).map(|i| format!("col{i}")).collect::<Vec<_>>(), spec)
                    .and_then(|i| first.get(i))
                    .map(|f| f.to_ascii_lowercase())
            };
            let named = |spec: &str, names: &[&str]| field(spec).is_some_and(|f| names.contains(&f.as_str()));
            by_name || named(label_column, LABEL_NAMES) || named(text_column, TEXT_NAMES)
        });
        let l = resolve_layout(path, &first, Some(has_header), Some(label_column))?;
        let label = l.special.ok_or_else(|| data_err(path, None, missing_column(label_column, &l.names)))?;
        let text = find_column(&l.names, text_column)
            .ok_or_else(|| data_err(path, None, missing_column(text_column, &l.names)))?;
        if label == text {
            return Err(config_err(
                "text_column",
                text_column,
                format!("is the same column as label_column \"{label_column}\""),
            ));
        }
        let l = layout.insert((l, label, text));
        if has_header {
            Ok(())
        } else {
            add(l, line, fields)
        }
    })?;
    if layout.is_none() {
        return Err(data_err(path, None, "file is empty"));
    }
    if out.examples.is_empty() {
        return Err(data_err(path, None, "no data rows after the header"));
    }
    Ok(out)
}
