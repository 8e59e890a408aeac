//! Numeric CSV files: tables of series for forecasting ([`read_table`]) and
//! one-sequence-per-row classification files ([`read_labeled_rows`]).
//!
//! Both share the same reading rules: the `csv` crate does the quoting
//! (`"1949-01",112`), fields are trimmed, blank lines are skipped, a UTF-8
//! BOM is ignored, gzip input is decompressed, and every row must have as
//! many fields as the first one. Columns are named either by header name or
//! by 0-based index given as a string ("0", "3"; "-1" is the last column).

use super::{parse_finite, read_bytes, read_err};
use recurrent::error::{data_err, Error, Result};
use std::path::{Path, PathBuf};

/// How to read a numeric CSV table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CsvOptions {
    /// Whether the first row holds column names. `None` detects it: the
    /// first row is a header when one of its non-empty fields, other than
    /// the date column's, is not a number (or when the date column is given
    /// by a name that appears in the first row).
    pub header: Option<bool>,
    /// Field separator, usually `b','`.
    pub delimiter: u8,
    /// The column holding time stamps, by name or 0-based index as a string.
    /// It is kept as text in [`Table::dates`] instead of parsed as numbers.
    pub date_column: Option<String>,
}

impl Default for CsvOptions {
    /// Comma-separated, header auto-detected, no date column.
    fn default() -> Self {
        CsvOptions { header: None, delimiter: b',', date_column: None }
    }
}

/// A numeric table read from a CSV file, column-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Table {
    /// The file the table came from, so that later lookups
    /// ([`Table::column`]) can name it in their errors.
    pub path: PathBuf,
    /// Names of the numeric columns (the date column excluded), from the
    /// header, or "col0", "col1", ... (numbered by position in the file)
    /// when there is none.
    pub names: Vec<String>,
    /// The numeric columns, `columns[c][row]`, all finite and of equal length.
    pub columns: Vec<Vec<f64>>,
    /// Raw text of the date column, one entry per row, when one was named.
    pub dates: Option<Vec<String>>,
}

impl Table {
    /// Number of data rows.
    pub fn rows(&self) -> usize {
        self.columns.first().map_or(0, Vec::len)
    }

    /// Position in [`Table::columns`] of a column given by name or by
    /// 0-based index (into the numeric columns) as a string. A name wins
    /// over an index, so a column literally named "2" is found by its name.
    pub fn column_index(&self, name_or_index: &str) -> Result<usize> {
        find_column(&self.names, name_or_index)
            .ok_or_else(|| data_err(&self.path, None, missing_column(name_or_index, &self.names)))
    }

    /// The values of one column, by name or 0-based index as a string.
    pub fn column(&self, name_or_index: &str) -> Result<&[f64]> {
        let c = self.column_index(name_or_index)?;
        Ok(&self.columns[c])
    }
}

/// Sequences for classification, one per CSV row, with their labels.
#[derive(Clone, Debug, PartialEq)]
pub struct LabeledRows {
    /// Each row is one univariate sequence; all have the same length (the
    /// number of non-label columns).
    pub rows: Vec<Vec<f64>>,
    /// The label of each row, as written in the file (trimmed).
    pub labels: Vec<String>,
}

/// Reads a numeric table (for forecasting) from a CSV file, possibly gzip.
///
/// Every column but the date column must hold finite numbers in every row;
/// an empty field, a non-number, NaN or an infinity is an error naming the
/// line and the column. When the date column's values look like dates
/// (`YYYY`, `YYYY-MM`, `YYYY-MM-DD`, `YYYY-MM-DD HH:MM[:SS]`, a `T` also
/// accepted before the time) they must not decrease from one row to the
/// next: an out-of-order row usually means a shuffled or concatenated file,
/// which would silently ruin a forecasting split. Values that do not look
/// like dates (e.g. "1-01") are kept but not checked.
pub fn read_table(path: &Path, opts: &CsvOptions) -> Result<Table> {
    let mut layout: Option<Layout> = None;
    let mut numeric: Vec<usize> = Vec::new();
    let mut columns: Vec<Vec<f64>> = Vec::new();
    let mut dates: Option<Vec<String>> = None;
    let mut previous = DateOrder::default();
    let mut rows = 0usize;
    scan_records(path, opts.delimiter, |line, fields| {
        let Some(layout) = layout.as_ref() else {
            let first: Vec<String> = fields.iter().map(str::to_string).collect();
            let l = resolve_layout(path, &first, opts.header, opts.date_column.as_deref())?;
            numeric = (0..l.names.len()).filter(|&c| Some(c) != l.special).collect();
            if numeric.is_empty() {
                return Err(data_err(path, None, "no numeric columns (the only column is the date column)"));
            }
            columns = vec![Vec::new(); numeric.len()];
            dates = l.special.map(|_| Vec::new());
            let header = l.has_header;
            layout = Some(l);
            if header {
                return Ok(());
            }
            return table_row(
                path,
                layout.as_ref().expect("set"),
                &numeric,
                &mut columns,
                &mut dates,
                &mut previous,
                line,
                fields,
            )
            .map(|()| rows += 1);
        };
        table_row(path, layout, &numeric, &mut columns, &mut dates, &mut previous, line, fields)?;
        rows += 1;
        Ok(())
    })?;
    let layout = layout.ok_or_else(|| data_err(path, None, "file is empty"))?;
    if rows == 0 {
        return Err(data_err(path, None, "no data rows after the header"));
    }
    let names = numeric.iter().map(|&c| layout.names[c].clone()).collect();
    Ok(Table { path: path.to_path_buf(), names, columns, dates })
}

/// One data row of a table: its numbers into `columns`, its date checked
/// against the previous one and kept.
#[allow(clippy::too_many_arguments)]
fn table_row(
    path: &Path,
    layout: &Layout,
    numeric: &[usize],
    columns: &mut [Vec<f64>],
    dates: &mut Option<Vec<String>>,
    previous: &mut DateOrder,
    line: usize,
    fields: &csv::StringRecord,
) -> Result<()> {
    for (out, &c) in columns.iter_mut().zip(numeric) {
        let what = format!("column \"{}\"", super::echo(&layout.names[c]));
        out.push(parse_finite(path, line, &what, &fields[c])?);
    }
    if let (Some(d), Some(dates)) = (layout.special, dates.as_mut()) {
        let text = &fields[d];
        if text.is_empty() {
            return Err(data_err(
                path,
                Some(line),
                format!("column \"{}\": empty date", super::echo(&layout.names[d])),
            ));
        }
        previous.check(path, line, text)?;
        dates.push(text.to_string());
    }
    Ok(())
}

/// Reads a classification CSV: each row is one univariate sequence (every
/// column but the label column, in file order) followed or preceded by its
/// label. The layout of UCR's CSV exports and of the digits data set.
///
/// `header: None` detects a header as [`CsvOptions::header`] does, with the
/// label column in the date column's role. `label_column` is a name or a
/// 0-based index as a string ("-1" for the last column).
pub fn read_labeled_rows(path: &Path, header: Option<bool>, delimiter: u8, label_column: &str) -> Result<LabeledRows> {
    let mut layout: Option<(Layout, usize)> = None;
    let mut rows = Vec::new();
    let mut labels = Vec::new();
    let mut row_of = |layout: &(Layout, usize), line: usize, fields: &csv::StringRecord| -> Result<()> {
        let (layout, label) = (&layout.0, layout.1);
        let mut row = Vec::with_capacity(fields.len().saturating_sub(1));
        for (c, field) in fields.iter().enumerate() {
            if c != label {
                let what = format!("column \"{}\"", super::echo(&layout.names[c]));
                row.push(parse_finite(path, line, &what, field)?);
            }
        }
        let text = &fields[label];
        if text.is_empty() {
            return Err(data_err(
                path,
                Some(line),
                format!("column \"{}\": empty label", super::echo(&layout.names[label])),
            ));
        }
        rows.push(row);
        labels.push(text.to_string());
        Ok(())
    };
    scan_records(path, delimiter, |line, fields| {
        match layout.as_ref() {
            Some(l) => row_of(l, line, fields),
            None => {
                let first: Vec<String> = fields.iter().map(str::to_string).collect();
                let l = resolve_layout(path, &first, header, Some(label_column))?;
                // resolve_layout always resolves a given column or fails.
                let label = l.special.ok_or_else(|| data_err(path, None, missing_column(label_column, &l.names)))?;
                if l.names.len() < 2 {
                    return Err(data_err(path, None, "no value columns (the only column is the label column)"));
                }
                let has_header = l.has_header;
                let l = layout.insert((l, label));
                if has_header {
                    Ok(())
                } else {
                    row_of(l, line, fields)
                }
            }
        }
    })?;
    if layout.is_none() {
        return Err(data_err(path, None, "file is empty"));
    }
    if rows.is_empty() {
        return Err(data_err(path, None, "no data rows after the header"));
    }
    Ok(LabeledRows { rows, labels })
}

/// Most fields one CSV row may have (a row is one time step of a table or
/// one sequence of a classification file).
pub const MAX_FIELDS: usize = 1 << 20;

/// Longest line of a CSV file, in bytes.
pub const MAX_LINE_BYTES: usize = 16 << 20;

/// Refuses a line longer than [`MAX_LINE_BYTES`] or with more than
/// [`MAX_FIELDS`] delimiters before the CSV parser sees it, so one huge
/// line cannot make the parser's record (8 bytes per field besides the
/// text) outgrow the file. Quotes are ignored: a quoted delimiter counts.
fn check_lines(path: &Path, bytes: &[u8], delimiter: u8) -> Result<()> {
    let (mut line, mut start, mut fields) = (1usize, 0usize, 1usize);
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'\n' || b == b'\r' {
            if b == b'\r' && bytes.get(i + 1) == Some(&b'\n') {
                i += 1;
            }
            line += 1;
            start = i + 1;
            fields = 1;
        } else if b == delimiter {
            fields += 1;
            if fields > MAX_FIELDS {
                return Err(data_err(path, Some(line), format!("more than {MAX_FIELDS} fields on one line")));
            }
        }
        if i + 1 - start > MAX_LINE_BYTES {
            return Err(data_err(path, Some(line), format!("line is longer than {MAX_LINE_BYTES} bytes")));
        }
        i += 1;
    }
    Ok(())
}

/// Calls `f` with every record of a CSV file and its 1-based line, in
/// order, without keeping the records: memory is the file's bytes plus what
/// `f` keeps. Guarantees that every record has as many fields as the
/// first. The `csv` crate runs in flexible mode only so that a ragged row
/// reaches us and can be reported as "expected N fields, found M" at its
/// line, rather than as the crate's own wording. Returns the number of
/// records.
pub(crate) fn scan_records(
    path: &Path,
    delimiter: u8,
    mut f: impl FnMut(usize, &csv::StringRecord) -> Result<()>,
) -> Result<usize> {
    // The whole file is read first so that line numbers can be counted from
    // the bytes: csv 1.4's Position::line() is one short for every record
    // that follows a CRLF line end.
    let bytes = read_bytes(path)?;
    check_lines(path, &bytes, delimiter)?;
    let mut lines = LineCounter::new(&bytes);
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .delimiter(delimiter)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(bytes.as_slice());
    let mut record = csv::StringRecord::new();
    let mut width = None;
    let mut count = 0;
    loop {
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                let line = e.position().map(|p| lines.line_at(p.byte() as usize));
                return Err(csv_error(path, line, e));
            }
        }
        let line = record.position().map_or(count + 1, |p| lines.line_at(p.byte() as usize));
        match width {
            None => width = Some(record.len()),
            Some(w) if w != record.len() => {
                return Err(data_err(path, Some(line), format!("expected {w} fields, found {}", record.len())));
            }
            Some(_) => {}
        }
        f(line, &record)?;
        count += 1;
    }
    Ok(count)
}

/// Maps byte offsets of records to 1-based line numbers, counting `\n`,
/// `\r\n` and a lone `\r` as one line end each. Offsets are asked for in
/// increasing order, so the count resumes where the last one stopped.
struct LineCounter<'a> {
    bytes: &'a [u8],
    /// Bytes before `pos` have been counted.
    pos: usize,
    /// Line number at `pos`.
    line: usize,
}

impl<'a> LineCounter<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        LineCounter { bytes, pos: 0, line: 1 }
    }

    /// The line of the record the csv crate places at `offset`. Its offset
    /// may point at the line end before the record (the `\n` of `\r\n`, or
    /// blank lines it skipped), so line-end bytes are stepped over first.
    fn line_at(&mut self, offset: usize) -> usize {
        let mut start = offset.min(self.bytes.len());
        while start < self.bytes.len() && matches!(self.bytes[start], b'\r' | b'\n') {
            start += 1;
        }
        if start < self.pos {
            // Never expected (offsets only grow), but recount rather than
            // report a wrong line.
            self.pos = 0;
            self.line = 1;
        }
        for i in self.pos..start {
            let ends_line = match self.bytes[i] {
                b'\n' => true,
                b'\r' => self.bytes.get(i + 1) != Some(&b'\n'),
                _ => false,
            };
            self.line += usize::from(ends_line);
        }
        self.pos = start;
        self.line
    }
}

/// Converts the `csv` crate's errors into data errors at `line`.
fn csv_error(path: &Path, line: Option<usize>, e: csv::Error) -> Error {
    match e.into_kind() {
        csv::ErrorKind::Io(io) => read_err(path, &io),
        csv::ErrorKind::Utf8 { err, .. } => data_err(
            path,
            line,
            format!("field {} is not valid UTF-8 (bad byte after {} valid bytes)", err.field() + 1, err.valid_up_to()),
        ),
        other => data_err(path, line, super::echo(&format!("{other:?}"))),
    }
}

/// Column names and the position of the one special (date or label) column.
pub(crate) struct Layout {
    /// Whether the first record is a header.
    pub has_header: bool,
    /// A name for every column of the file.
    pub names: Vec<String>,
    /// The special column's position, when one was asked for.
    pub special: Option<usize>,
}

/// Decides whether `first` is a header, names the columns and finds the
/// special column (`spec`: name or index). See [`CsvOptions::header`] for
/// the detection rule; a header that repeats a name is refused because
/// lookups by that name would be ambiguous.
pub(crate) fn resolve_layout(
    path: &Path,
    first: &[String],
    header: Option<bool>,
    spec: Option<&str>,
) -> Result<Layout> {
    let by_name = spec.and_then(|s| first.iter().position(|f| f == s));
    let is_index = spec.is_some_and(|s| s.parse::<i64>().is_ok());
    let has_header = header.unwrap_or_else(|| {
        // A name (not a number) found in the first row can only be a header.
        if by_name.is_some() && !is_index {
            return true;
        }
        let skip = by_name.or_else(|| spec.and_then(|s| index_of(s, first.len())));
        first.iter().enumerate().any(|(i, f)| Some(i) != skip && !f.is_empty() && f.parse::<f64>().is_err())
    });
    let names: Vec<String> = if has_header {
        first.iter().enumerate().map(|(i, f)| if f.is_empty() { format!("col{i}") } else { f.clone() }).collect()
    } else {
        (0..first.len()).map(|i| format!("col{i}")).collect()
    };
    for (j, name) in names.iter().enumerate() {
        if let Some(i) = names[..j].iter().position(|n| n == name) {
            return Err(data_err(
                path,
                Some(1),
                format!("duplicate column name \"{}\" (columns {i} and {j})", super::echo(name)),
            ));
        }
    }
    let special = match spec {
        None => None,
        Some(s) => Some(find_column(&names, s).ok_or_else(|| data_err(path, None, missing_column(s, &names)))?),
    };
    Ok(Layout { has_header, names, special })
}

/// A column by exact name first, else by index ("-1" counts from the end).
pub(crate) fn find_column(names: &[String], name_or_index: &str) -> Option<usize> {
    names.iter().position(|n| n == name_or_index).or_else(|| index_of(name_or_index, names.len()))
}

/// Parses a 0-based column index, negative ones counting from the end.
fn index_of(text: &str, len: usize) -> Option<usize> {
    let i: i64 = text.trim().parse().ok()?;
    let i = if i < 0 { len as i64 + i } else { i };
    (0..len as i64).contains(&i).then_some(i as usize)
}

/// The problem text for an unknown column, listing the ones there are.
pub(crate) fn missing_column(name: &str, names: &[String]) -> String {
    let mut list = names.iter().take(8).map(|n| super::echo(n)).collect::<Vec<_>>().join(", ");
    if names.len() > 8 {
        list.push_str(&format!(", ... {} in all", names.len()));
    }
    format!("column \"{}\" does not exist (columns: {list})", super::echo(name))
}

/// The order check of a date column. The first value decides: when it is
/// in a recognised format (an ISO date or date-time as [`parse_date`] reads
/// it, also with `/` or `.` between the parts, fractional seconds, `Z` or a
/// `+HH:MM` offset; a plain number such as a year or a Unix time; or
/// `DD/MM/YYYY` / `MM/DD/YYYY`, for which the file must be in order under
/// one of the two readings) every later value must be in the same format
/// and must not go back in time; otherwise (e.g. "1-01") the column is kept
/// unchecked.
#[derive(Default)]
struct DateOrder {
    /// Whether the first value was recognised (None before the first).
    checked: Option<bool>,
    /// The previous value's keys and text.
    previous: Option<(DateKeys, String)>,
    /// For day/month dates: whether the day-first and the month-first
    /// readings are still in order.
    alive: [bool; 2],
}

/// Sortable keys of one date value.
#[derive(Clone, Copy, Debug, PartialEq)]
enum DateKeys {
    /// Seconds since 1970 of an ISO date or date-time.
    Iso(f64),
    /// A plain number.
    Number(f64),
    /// `A/B/YYYY`: seconds of the day-first and of the month-first reading
    /// (None where that reading is not a valid date).
    DayMonth(Option<f64>, Option<f64>),
}

impl DateOrder {
    fn check(&mut self, path: &Path, line: usize, text: &str) -> Result<()> {
        let keys = date_keys(text);
        if self.checked.is_none() {
            self.checked = Some(keys.is_some());
            self.alive = [true, true];
        }
        if self.checked != Some(true) {
            return Ok(());
        }
        let order_err = |prev: &str| {
            Err(data_err(
                path,
                Some(line),
                format!(
                    "date \"{}\" is earlier than the previous row (\"{}\"): rows must be in time order",
                    super::echo(text),
                    super::echo(prev)
                ),
            ))
        };
        let Some(keys) = keys else {
            let first = self.previous.as_ref().map_or(String::new(), |p| p.1.clone());
            return Err(data_err(
                path,
                Some(line),
                format!(
                    "date \"{}\" is not in the format of the rows before (\"{}\"), so their order cannot be checked",
                    super::echo(text),
                    super::echo(&first)
                ),
            ));
        };
        if let Some((prev, prev_text)) = &self.previous {
            match (*prev, keys) {
                (DateKeys::Iso(a), DateKeys::Iso(b)) | (DateKeys::Number(a), DateKeys::Number(b)) => {
                    if b < a {
                        return order_err(prev_text);
                    }
                }
                (DateKeys::DayMonth(a0, a1), DateKeys::DayMonth(b0, b1)) => {
                    let ok = |a: Option<f64>, b: Option<f64>| matches!((a, b), (Some(a), Some(b)) if b >= a);
                    self.alive[0] &= ok(a0, b0);
                    self.alive[1] &= ok(a1, b1);
                    if !self.alive[0] && !self.alive[1] {
                        return order_err(prev_text);
                    }
                }
                _ => {
                    return Err(data_err(
                        path,
                        Some(line),
                        format!(
                            "date \"{}\" is not in the format of the rows before (\"{}\"), so their order cannot be checked",
                            super::echo(text),
                            super::echo(prev_text)
                        ),
                    ))
                }
            }
        } else if let DateKeys::DayMonth(a, b) = keys {
            self.alive = [a.is_some(), b.is_some()];
        }
        self.previous = Some((keys, text.to_string()));
        Ok(())
    }
}

/// Days from 1970-01-01 to a proleptic Gregorian date (H. Hinnant's
/// `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// Seconds of a date key (missing month or day as the first).
fn key_seconds(k: DateKey) -> f64 {
    let (y, mo, d, h, mi, s) = k;
    let days = days_from_civil(i64::from(y), i64::from(mo.max(1)), i64::from(d.max(1)));
    (days * 86400 + i64::from(h) * 3600 + i64::from(mi) * 60 + i64::from(s)) as f64
}

/// The keys of one date value, or None when it is in no format
/// [`DateOrder`] knows.
fn date_keys(text: &str) -> Option<DateKeys> {
    let text = text.trim();
    if let Some(seconds) = iso_seconds(text) {
        return Some(DateKeys::Iso(seconds));
    }
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E')) {
        if let Ok(v) = text.parse::<f64>() {
            if v.is_finite() {
                return Some(DateKeys::Number(v));
            }
        }
    }
    // A/B/YYYY with '/', '.' or '-'.
    let (date, time) = match text.find([' ', 'T']) {
        Some(at) => (&text[..at], Some(&text[at + 1..])),
        None => (text, None),
    };
    let parts: Vec<&str> = date.split(['/', '.', '-']).collect();
    if let [a, b, y] = parts[..] {
        let small = |s: &str| (1..=2).contains(&s.len()) && s.bytes().all(|c| c.is_ascii_digit());
        if small(a) && small(b) && y.len() == 4 && y.bytes().all(|c| c.is_ascii_digit()) {
            let read = |day: &str, month: &str| -> Option<f64> {
                let iso = format!("{y}-{month:0>2}-{day:0>2}{}", time.map_or(String::new(), |t| format!(" {t}")));
                iso_seconds(&iso)
            };
            let (dm, md) = (read(a, b), read(b, a));
            if dm.is_some() || md.is_some() {
                return Some(DateKeys::DayMonth(dm, md));
            }
        }
    }
    None
}

/// Seconds since 1970 of an ISO-like date or date-time: what [`parse_date`]
/// reads, with `/` or `.` also between the date's parts, and a time that may
/// end in fractional seconds and `Z` or an offset (`+HH:MM`, `-HHMM`).
fn iso_seconds(text: &str) -> Option<f64> {
    let (date, time) = match text.find([' ', 'T']) {
        Some(at) => (&text[..at], Some(text[at + 1..].trim())),
        None => (text, None),
    };
    // '.' separates the parts only as in YYYY.MM.DD (1749.5 is a number).
    let date = if date.matches('.').count() == 2 { date.replace('.', "-") } else { date.to_string() };
    let date = date.replace('/', "-");
    let Some(time) = time else {
        return parse_date(&date).map(key_seconds);
    };
    // Offset or Z at the end of the time.
    let (mut clock, mut offset) = (time, 0.0);
    if let Some(c) = clock.strip_suffix(['Z', 'z']) {
        clock = c;
    } else if let Some(at) = clock.rfind(['+', '-']) {
        let (c, off) = (&clock[..at], &clock[at + 1..]);
        let digits: String = off.chars().filter(|c| *c != ':').collect();
        if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let (oh, om): (u32, u32) = (digits[..2].parse().ok()?, digits[2..].parse().ok()?);
        if oh > 23 || om > 59 {
            return None;
        }
        let sign = if clock.as_bytes()[at] == b'-' { -1.0 } else { 1.0 };
        offset = sign * f64::from(oh * 3600 + om * 60);
        clock = c;
    }
    // Fractional seconds.
    let mut fraction = 0.0;
    if let Some(at) = clock.find('.') {
        let frac = &clock[at + 1..];
        if frac.is_empty() || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        fraction = format!("0.{frac}").parse::<f64>().ok()?;
        clock = &clock[..at];
    }
    let key = parse_date(&format!("{date} {clock}"))?;
    Some(key_seconds(key) + fraction - offset)
}

/// A date reduced to a sortable tuple: year, month, day, hour, minute,
/// second, with missing parts as 0 (so "1949" sorts before "1949-01").
type DateKey = (u32, u32, u32, u32, u32, u32);

/// Parses `YYYY`, `YYYY-MM`, `YYYY-MM-DD` and `YYYY-MM-DD HH:MM[:SS]` (space
/// or `T` before the time). Anything else, including out-of-range parts, is
/// `None`: only well-formed dates take part in the ordering check.
fn parse_date(text: &str) -> Option<DateKey> {
    /// Exactly `width` ASCII digits within `lo..=hi`.
    fn part(s: &str, width: usize, lo: u32, hi: u32) -> Option<u32> {
        if s.len() != width || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let v: u32 = s.parse().ok()?;
        (lo..=hi).contains(&v).then_some(v)
    }
    let (date, time) = match text.find([' ', 'T']) {
        Some(at) => (&text[..at], Some(&text[at + 1..])),
        None => (text, None),
    };
    let mut d = date.split('-');
    let year = part(d.next()?, 4, 0, 9999)?;
    let month = d.next().map(|m| part(m, 2, 1, 12)).unwrap_or(Some(0))?;
    let day = d.next().map(|s| part(s, 2, 1, 31)).unwrap_or(Some(0))?;
    if d.next().is_some() {
        return None;
    }
    let (mut hour, mut minute, mut second) = (0, 0, 0);
    if let Some(time) = time {
        // A time only makes sense after a full date.
        if day == 0 {
            return None;
        }
        let mut t = time.trim().split(':');
        hour = part(t.next()?, 2, 0, 23)?;
        minute = part(t.next()?, 2, 0, 59)?;
        second = t.next().map(|s| part(s, 2, 0, 60)).unwrap_or(Some(0))?;
        if t.next().is_some() {
            return None;
        }
    }
    Some((year, month, day, hour, minute, second))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_parse_to_sortable_keys() {
        assert_eq!(parse_date("1949"), Some((1949, 0, 0, 0, 0, 0)));
        assert_eq!(parse_date("1949-01"), Some((1949, 1, 0, 0, 0, 0)));
        assert_eq!(parse_date("1981-01-02"), Some((1981, 1, 2, 0, 0, 0)));
        assert_eq!(parse_date("2016-07-01 01:00:00"), Some((2016, 7, 1, 1, 0, 0)));
        assert_eq!(parse_date("2016-07-01T01:30"), Some((2016, 7, 1, 1, 30, 0)));
        assert!(parse_date("1949-01") < parse_date("1949-02"));
        assert!(parse_date("1949-12") < parse_date("1950-01"));
        for bad in ["1-01", "1949-13", "1949-1", "abc", "", "1949-01-01 25:00", "1949-01 10:00", "1949-01-01-01"] {
            assert_eq!(parse_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn date_keys_of_the_usual_formats() {
        let iso = |t: &str| match date_keys(t) {
            Some(DateKeys::Iso(s)) => s,
            other => panic!("{t}: {other:?}"),
        };
        assert_eq!(iso("1970-01-01"), 0.0);
        assert_eq!(iso("1970-01-02 00:00:01"), 86401.0);
        assert_eq!(iso("2020-01-01T10:00:00Z"), iso("2020-01-01 10:00"));
        assert_eq!(iso("2020-01-01T10:00:00+01:00"), iso("2020-01-01 09:00"));
        assert_eq!(iso("2020-01-01T10:00:00.250"), iso("2020-01-01 10:00") + 0.25);
        assert_eq!(iso("2020/03/01"), iso("2020-03-01"));
        assert!(iso("2000-03-01") - iso("2000-02-28") == 2.0 * 86400.0, "2000 is a leap year");
        assert_eq!(date_keys("1700000000"), Some(DateKeys::Number(1.7e9)));
        assert_eq!(date_keys("1749.5"), Some(DateKeys::Number(1749.5)));
        match date_keys("13/01/2020") {
            Some(DateKeys::DayMonth(Some(_), None)) => {}
            other => panic!("{other:?}"),
        }
        assert_eq!(date_keys("1-01"), None);
        assert_eq!(date_keys("Jan 2020"), None);
    }

    #[test]
    fn negative_indices_count_from_the_end() {
        assert_eq!(index_of("-1", 3), Some(2));
        assert_eq!(index_of("-3", 3), Some(0));
        assert_eq!(index_of("-4", 3), None);
        assert_eq!(index_of("3", 3), None);
        assert_eq!(index_of("x", 3), None);
    }

    #[test]
    fn line_numbers_for_every_line_end() {
        // Offsets as the csv crate reports them: after CRLF it points at
        // the '\n', and skipped blank lines come before the record.
        let crlf = b"a,b\r\n1,2\r\n\r\n3,4\r\n";
        let mut lines = LineCounter::new(crlf);
        assert_eq!([lines.line_at(0), lines.line_at(4), lines.line_at(9)], [1, 2, 4]);
        let cr = b"a\rb\rc";
        let mut lines = LineCounter::new(cr);
        assert_eq!([lines.line_at(0), lines.line_at(2), lines.line_at(4)], [1, 2, 3]);
        let quoted = b"\"x\ny\",1\n2,3\n";
        let mut lines = LineCounter::new(quoted);
        assert_eq!([lines.line_at(0), lines.line_at(8)], [1, 3]);
    }

    #[test]
    fn csv_crate_line_offsets_match_the_counter() {
        // The end-to-end check: the offsets csv actually reports for a CRLF
        // file with a blank line and a quoted newline map to the real lines.
        let bytes = b"h1,h2\r\n1,2\r\n\r\n\"a\r\nb\",3\r\n4,5\r\n";
        let mut reader = csv::ReaderBuilder::new().has_headers(false).from_reader(&bytes[..]);
        let mut lines = LineCounter::new(bytes);
        let found: Vec<usize> =
            reader.records().map(|r| lines.line_at(r.unwrap().position().unwrap().byte() as usize)).collect();
        assert_eq!(found, [1, 2, 4, 6]);
    }
}
