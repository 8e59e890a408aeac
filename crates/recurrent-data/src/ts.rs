//! UCR/UEA `.ts` files (the sktime format of the time-series classification
//! archives).
//!
//! Layout: `#` comment lines, then `@key value` header lines (keys are
//! case-insensitive): `@problemName`, `@timeStamps`, `@missing`,
//! `@univariate`, `@equalLength`, `@seriesLength`, `@dimensions`,
//! `@classLabel true a b c` (or `@targetLabel true` for regression), then
//! `@data` and one example per line: channels separated by `:`, values
//! within a channel by `,`, and the label as the last `:` field.

use super::{parse_finite, read_bytes};
use recurrent::error::{data_err, Result};
use std::path::Path;

/// The contents of a `.ts` file.
#[derive(Clone, Debug, PartialEq)]
pub struct TsData {
    /// The `@problemName`, when given.
    pub problem: Option<String>,
    /// The examples, `series[example][channel][time]`. Channels of one
    /// example have equal length; examples may differ in length only when
    /// the header says `@equalLength false`.
    pub series: Vec<Vec<Vec<f64>>>,
    /// The label of each example as written (for regression files, the
    /// target as text). Empty when the file has no label field
    /// (`@classLabel false` without `@targetLabel true`).
    pub labels: Vec<String>,
    /// The declared classes, in header order, from `@classLabel true ...`;
    /// empty when the file declares none.
    pub class_labels: Vec<String>,
}

/// What the header declared; `None` where a key was absent.
#[derive(Default)]
struct Header {
    problem: Option<String>,
    univariate: Option<bool>,
    equal_length: Option<bool>,
    series_length: Option<usize>,
    dimensions: Option<usize>,
    /// `Some(list)` after `@classLabel true ...`, `Some(empty)` after `false`.
    class_labels: Option<Vec<String>>,
    target_label: bool,
}

/// Reads a UCR/UEA `.ts` file (gzip accepted).
///
/// Refused, with the line: missing values (`?` or `NaN`; "missing values
/// are not supported", since the networks here have no masking of inputs),
/// `@timeStamps true` (values would be `(time,value)` pairs), non-numeric
/// or infinite values, examples whose channels differ in length, a number of
/// channels that changes between examples or contradicts `@dimensions` /
/// `@univariate`, lengths that differ under `@equalLength true` or from
/// `@seriesLength`, and labels not declared by `@classLabel`. Header keys
/// this reader does not use are ignored so that newer archive headers load.
pub fn read_ts(path: &Path) -> Result<TsData> {
    let bytes = read_bytes(path)?;
    if bytes.is_empty() {
        return Err(data_err(path, None, "file is empty"));
    }
    let text = match std::str::from_utf8(&bytes) {
        Ok(text) => text,
        Err(e) => {
            let line = bytes[..e.valid_up_to()].iter().filter(|&&b| b == b'\n').count() + 1;
            return Err(data_err(path, Some(line), "invalid UTF-8"));
        }
    };

    let mut header = Header::default();
    let mut in_data = false;
    let mut series: Vec<Vec<Vec<f64>>> = Vec::new();
    let mut labels = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        // One example per line: a line past this size would take 4 times
        // its bytes as values before any check could refuse it.
        if raw.len() > super::csv_table::MAX_LINE_BYTES {
            return Err(data_err(
                path,
                Some(line),
                format!("line is longer than {} bytes", super::csv_table::MAX_LINE_BYTES),
            ));
        }
        let content = raw.trim();
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        if !in_data {
            in_data = parse_header_line(path, line, content, &mut header)?;
            continue;
        }
        let (channels, label) = parse_example(path, line, content, &header)?;
        check_example(path, line, &channels, &header, series.first())?;
        series.push(channels);
        if let Some(label) = label {
            labels.push(label);
        }
    }
    if !in_data {
        return Err(data_err(path, None, "no @data line"));
    }
    if series.is_empty() {
        return Err(data_err(path, None, "no examples after @data"));
    }
    Ok(TsData { problem: header.problem, series, labels, class_labels: header.class_labels.unwrap_or_default() })
}

/// Applies one header line; returns true on `@data`.
fn parse_header_line(path: &Path, line: usize, content: &str, header: &mut Header) -> Result<bool> {
    let Some(rest) = content.strip_prefix('@') else {
        return Err(data_err(path, Some(line), "data before the @data line"));
    };
    let mut words = rest.split_whitespace();
    let key = words.next().unwrap_or("").to_ascii_lowercase();
    let values: Vec<&str> = words.collect();
    let flag = |values: &[&str]| -> Result<bool> {
        match values.first().map(|v| v.to_ascii_lowercase()).as_deref() {
            Some("true") => Ok(true),
            Some("false") => Ok(false),
            _ => Err(data_err(
                path,
                Some(line),
                format!("@{} needs true or false, found \"{}\"", super::echo(&key), super::echo(&values.join(" "))),
            )),
        }
    };
    let count = |values: &[&str]| -> Result<usize> {
        match values.first().and_then(|v| v.parse::<usize>().ok()) {
            Some(n) if n > 0 => Ok(n),
            _ => Err(data_err(
                path,
                Some(line),
                format!(
                    "@{} needs a positive integer, found \"{}\"",
                    super::echo(&key),
                    super::echo(&values.join(" "))
                ),
            )),
        }
    };
    match key.as_str() {
        "data" => return Ok(true),
        "problemname" => header.problem = Some(values.join(" ")),
        "timestamps" => {
            let stamped = flag(&values)?;
            if stamped {
                return Err(data_err(path, Some(line), "@timeStamps true is not supported"));
            }
        }
        // "@missing true" only announces that '?' may occur; each '?' is
        // refused where it appears, with its own line.
        "missing" => {
            flag(&values)?;
        }
        "univariate" => header.univariate = Some(flag(&values)?),
        "equallength" => header.equal_length = Some(flag(&values)?),
        "serieslength" => header.series_length = Some(count(&values)?),
        "dimensions" | "dimension" => header.dimensions = Some(count(&values)?),
        "classlabel" => {
            let classes = if flag(&values)? {
                let classes: Vec<String> = values[1..].iter().map(|s| s.to_string()).collect();
                if classes.is_empty() {
                    return Err(data_err(path, Some(line), "@classLabel true lists no classes"));
                }
                classes
            } else {
                Vec::new()
            };
            header.class_labels = Some(classes);
        }
        "targetlabel" => header.target_label = flag(&values)?,
        _ => {}
    }
    Ok(false)
}

/// Splits one example line into channels and its label (when the file has
/// labels), parsing and checking every value.
fn parse_example(path: &Path, line: usize, content: &str, header: &Header) -> Result<(Vec<Vec<f64>>, Option<String>)> {
    let has_label = header.target_label || header.class_labels.as_ref().is_some_and(|c| !c.is_empty());
    let mut fields: Vec<&str> = content.split(':').collect();
    let label = if has_label {
        if fields.len() < 2 {
            return Err(data_err(path, Some(line), "expected values and a label separated by ':', found no ':'"));
        }
        let label = fields.pop().unwrap_or_default().trim();
        if label.is_empty() {
            return Err(data_err(path, Some(line), "empty label"));
        }
        if let Some(classes) = header.class_labels.as_ref().filter(|c| !c.is_empty()) {
            if !classes.iter().any(|c| c == label) {
                return Err(data_err(
                    path,
                    Some(line),
                    format!(
                        "label \"{}\" is not one of the @classLabel values ({})",
                        super::echo(label),
                        super::echo(&classes.join(", "))
                    ),
                ));
            }
        }
        Some(label.to_string())
    } else {
        None
    };
    let mut channels = Vec::with_capacity(fields.len());
    for (c, field) in fields.iter().enumerate() {
        let field = field.trim();
        if field.is_empty() {
            return Err(data_err(path, Some(line), format!("channel {c} is empty")));
        }
        let mut values = Vec::new();
        for (t, value) in field.split(',').enumerate() {
            let value = value.trim();
            if value == "?" || value.eq_ignore_ascii_case("nan") {
                return Err(data_err(
                    path,
                    Some(line),
                    format!("missing values are not supported (channel {c}, position {t})"),
                ));
            }
            values.push(parse_finite(path, line, &format!("channel {c}, position {t}"), value)?);
        }
        channels.push(values);
    }
    Ok((channels, label))
}

/// Checks one example's shape against itself, the header and the first
/// example (channel count, and length when lengths must be equal).
fn check_example(
    path: &Path,
    line: usize,
    channels: &[Vec<f64>],
    header: &Header,
    first: Option<&Vec<Vec<f64>>>,
) -> Result<()> {
    let err = |problem: String| Err(data_err(path, Some(line), problem));
    let len = channels[0].len();
    if let Some((c, other)) = channels.iter().enumerate().find(|(_, ch)| ch.len() != len) {
        return err(format!("channel {c} has {} values but channel 0 has {len}", other.len()));
    }
    let declared = header.dimensions.or(match header.univariate {
        Some(true) => Some(1),
        _ => None,
    });
    if let Some(d) = declared {
        if channels.len() != d {
            return err(format!("expected {d} channels, found {}", channels.len()));
        }
    }
    if let Some(first) = first {
        if channels.len() != first.len() {
            return err(format!("expected {} channels as in the first example, found {}", first.len(), channels.len()));
        }
    }
    if header.equal_length == Some(true) {
        if let Some(n) = header.series_length {
            if len != n {
                return err(format!("expected series length {n} (@seriesLength), found {len}"));
            }
        }
        if let Some(first) = first {
            if len != first[0].len() {
                return err(format!(
                    "expected series length {} as in the first example (@equalLength true), found {len}",
                    first[0].len()
                ));
            }
        }
    }
    Ok(())
}
