//! Line charts (PNG or SVG) of training curves and forecasts, drawn with `plotters`.
//!
//! Everything here works on a bare machine: the PNG encoder is pure Rust, and text
//! is drawn with Noto Sans Regular, compiled into the binary from the
//! `ttf-noto-sans` crate and registered with plotters' `ab_glyph` backend, so no
//! system font, fontconfig or freetype is needed. SVG files name the `sans-serif`
//! family and leave the glyphs to whatever shows them.
//!
//! Every chart is 900x500 pixels (the SVG viewport is the same size) and is written
//! atomically: drawn into a hidden temporary file in the target folder, then renamed
//! over the target, so a reader never sees half a chart.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

use recurrent::error::{data_err, shape_err, Result};

/// Chart size in pixels, for PNG and SVG alike.
pub const CHART_SIZE: (u32, u32) = (900, 500);

/// Font family every text of a chart is drawn in (registered from embedded bytes).
const FONT: &str = "sans-serif";

/// Series with at most this many points also get a dot at each point, so that a
/// single point, or a sparse validation curve, stays visible.
const MARKER_LIMIT: usize = 30;

/// Line colours, cycled (matplotlib's "tab10").
const COLORS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// One named line: (x, y) points.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

impl Series {
    /// A series named `name` over `points`.
    pub fn new(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Series { name: name.into(), points }
    }
}

/// Output format, from the file extension.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Format {
    Png,
    Svg,
}

impl Format {
    fn from_path(path: &Path) -> Result<Self> {
        let ext = path.extension().map(|e| e.to_string_lossy().into_owned());
        match ext.as_deref().map(str::to_ascii_lowercase).as_deref() {
            Some("png") => Ok(Format::Png),
            Some("svg") => Ok(Format::Svg),
            Some(other) => Err(data_err(
                path,
                None,
                format!("unsupported chart format \".{other}\": use a .png or .svg file name"),
            )),
            None => Err(data_err(path, None, "chart file name has no extension: use .png or .svg")),
        }
    }

    fn ext(self) -> &'static str {
        match self {
            Format::Png => "png",
            Format::Svg => "svg",
        }
    }
}

/// Largest magnitude drawn: beyond it, axis arithmetic in plotters overflows
/// (an infinite span makes its tick search loop forever).
const MAX_ABS: f64 = 1e300;

/// Log-scale y values must lie in [1/LOG_MAX, LOG_MAX], so that the axis' top over
/// its bottom stays finite (plotters divides them to place its ticks).
const LOG_MAX: f64 = 1e150;

fn in_band(v: f64) -> bool {
    v.is_finite() && v.abs() <= MAX_ABS
}

fn in_log_band(v: f64) -> bool {
    (1.0 / LOG_MAX..=LOG_MAX).contains(&v)
}

/// Registers the embedded font once per process; later calls return the first outcome.
fn ensure_font() -> std::result::Result<(), String> {
    static REGISTERED: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            register_font(FONT, FontStyle::Normal, ttf_noto_sans::REGULAR)
                .map_err(|_| "the embedded Noto Sans font could not be loaded".to_string())
        })
        .clone()
}

/// Line chart to `path`; the format comes from the extension (`.png` or `.svg`, any
/// case; anything else is an error naming the extension).
///
/// Draws `title`, the axis labels, and a legend when there is more than one series.
/// Points with a NaN or infinite coordinate, or one beyond ±1e300, are skipped; with
/// `log_y` the y axis is logarithmic and points with y outside [1e-150, 1e150]
/// (so every y <= 0) are skipped too. An empty `series`, or nothing
/// left to draw after skipping, is an error. A single point or a flat line gets a
/// padded range, so it still shows.
pub fn line_chart(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    log_y: bool,
) -> Result<()> {
    let format = Format::from_path(path)?;
    if series.is_empty() {
        return Err(data_err(path, None, "nothing to plot: no series given"));
    }
    let kept: Vec<Series> = series
        .iter()
        .map(|s| Series {
            name: s.name.clone(),
            points: s
                .points
                .iter()
                .copied()
                .filter(|&(x, y)| in_band(x) && in_band(y) && (!log_y || in_log_band(y)))
                .collect(),
        })
        .collect();
    let all = || kept.iter().flat_map(|s| s.points.iter());
    if all().next().is_none() {
        let problem = if log_y {
            "nothing to plot: no point has a finite x and a y in [1e-150, 1e150] (needed for a log-scale y axis)"
        } else {
            "nothing to plot: no point has finite x and y (within ±1e300)"
        };
        return Err(data_err(path, None, problem));
    }
    let (x_min, x_max) = min_max(all().map(|p| p.0));
    let (y_min, y_max) = min_max(all().map(|p| p.1));
    let x_range = pad_linear(x_min, x_max);
    let y_range = if log_y { pad_log(y_min, y_max) } else { pad_linear(y_min, y_max) };
    let chart = Chart { title, x_label, y_label, series: &kept, x_range, y_range, log_y };

    ensure_font().map_err(|e| data_err(path, None, e))?;
    write_atomically(path, format, |tmp| match format {
        Format::Png => chart.render(BitMapBackend::new(tmp, CHART_SIZE).into_drawing_area()),
        Format::Svg => chart.render(SVGBackend::new(tmp, CHART_SIZE).into_drawing_area()),
    })
}

/// Training curves from a metrics JSON-lines file: one JSON object per line with a
/// numeric `"step"` and, optionally, numeric `"train_loss"` and `"val_loss"` (a
/// missing key or `null` means "not measured at this step"; other keys are ignored;
/// blank lines are skipped). Plots the train and validation loss against step to
/// `out_path` (`.png` or `.svg`). The y axis is logarithmic when every loss is
/// positive (within [1e-150, 1e150]) and they span at least a factor of 100,
/// linear otherwise.
///
/// A line that is not such an object is an `Error::Data` naming the file and its
/// 1-based line; a file with no loss value at all is an error too.
pub fn plot_metrics(metrics_path: &Path, out_path: &Path) -> Result<()> {
    Format::from_path(out_path)?;
    let text = fs::read_to_string(metrics_path)
        .map_err(|e| data_err(metrics_path, None, format!("cannot read metrics file: {e}")))?;
    let mut train = Vec::new();
    let mut val = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let bad = |problem: String| data_err(metrics_path, Some(line_no), problem);
        let value: serde_json::Value = serde_json::from_str(line).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        let obj = value
            .as_object()
            .ok_or_else(|| bad("expected a JSON object like {\"step\": 1, \"train_loss\": 0.5}".into()))?;
        let step = match obj.get("step") {
            Some(v) => v.as_f64().ok_or_else(|| bad(format!("\"step\" must be a number, got {v}")))?,
            None => return Err(bad("missing \"step\"".into())),
        };
        for (key, out) in [("train_loss", &mut train), ("val_loss", &mut val)] {
            match obj.get(key) {
                None | Some(serde_json::Value::Null) => {}
                Some(v) => {
                    let loss = v.as_f64().ok_or_else(|| bad(format!("\"{key}\" must be a number or null, got {v}")))?;
                    out.push((step, loss));
                }
            }
        }
    }
    let mut series = Vec::new();
    if !train.is_empty() {
        series.push(Series::new("train loss", train));
    }
    if !val.is_empty() {
        series.push(Series::new("validation loss", val));
    }
    if series.is_empty() {
        return Err(data_err(metrics_path, None, "no \"train_loss\" or \"val_loss\" value to plot"));
    }
    let losses = || series.iter().flat_map(|s| s.points.iter().map(|p| p.1)).filter(|&y| in_band(y));
    let (lo, hi) = min_max(losses());
    let log_y = losses().all(in_log_band) && hi / lo >= 100.0;
    let name = metrics_path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let title = if name.is_empty() { "Training loss".to_string() } else { format!("Training loss ({name})") };
    line_chart(out_path, &title, "step", "loss", &series, log_y)
}

/// Forecast against actual: x is the index (0, 1, ...) of each value, with two
/// series, "actual" and "forecast" (they may differ in length; NaN values are gaps).
pub fn plot_forecast(path: &Path, title: &str, actual: &[f64], forecast: &[f64]) -> Result<()> {
    let indexed = |v: &[f64]| v.iter().enumerate().map(|(i, &y)| (i as f64, y)).collect();
    forecast_chart(path, title, "index", indexed(actual), indexed(forecast))
}

/// Like [`plot_forecast`] with the given x values (times, steps...) instead of the
/// index: `actual` and `forecast` must each have one value per x (pad with NaN
/// where a series has no value).
pub fn plot_forecast_xy(path: &Path, title: &str, x: &[f64], actual: &[f64], forecast: &[f64]) -> Result<()> {
    for (what, v) in [("actual", actual), ("forecast", forecast)] {
        if v.len() != x.len() {
            return Err(shape_err(format!("{what} values of the forecast chart"), x.len(), v.len()));
        }
    }
    let paired = |v: &[f64]| x.iter().copied().zip(v.iter().copied()).collect();
    forecast_chart(path, title, "x", paired(actual), paired(forecast))
}

fn forecast_chart(
    path: &Path,
    title: &str,
    x_label: &str,
    actual: Vec<(f64, f64)>,
    forecast: Vec<(f64, f64)>,
) -> Result<()> {
    if actual.is_empty() && forecast.is_empty() {
        return Err(data_err(path, None, "nothing to plot: no actual and no forecast values"));
    }
    let series = [Series::new("actual", actual), Series::new("forecast", forecast)];
    line_chart(path, title, x_label, "value", &series, false)
}

/// A validated chart, ready to draw on any backend.
struct Chart<'a> {
    title: &'a str,
    x_label: &'a str,
    y_label: &'a str,
    series: &'a [Series],
    x_range: (f64, f64),
    y_range: (f64, f64),
    log_y: bool,
}

impl Chart<'_> {
    fn render<DB: DrawingBackend>(&self, root: DrawingArea<DB, Shift>) -> std::result::Result<(), String> {
        let (y0, y1) = self.y_range;
        let drawn = if self.log_y {
            // plotters' own log ticks skip values below 2.2e-16 and leave a range
            // inside one decade unlabelled: place them here instead.
            let ticks = log_ticks(y0, y1);
            let spec = (y0..y1).log_scale().with_key_points(ticks.bold).with_light_points(ticks.light);
            if ticks.linear {
                let fmt = linear_tick_formatter(y0, y1);
                self.draw(&root, spec, &fmt)
            } else {
                self.draw(&root, spec, &log_tick_label)
            }
        } else {
            let fmt = linear_tick_formatter(y0, y1);
            self.draw(&root, y0..y1, &fmt)
        };
        drawn.and_then(|()| root.present()).map_err(|e| e.to_string())
    }

    fn draw<DB, Y>(
        &self,
        root: &DrawingArea<DB, Shift>,
        y_spec: Y,
        y_fmt: &dyn Fn(&f64) -> String,
    ) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>>
    where
        DB: DrawingBackend,
        Y: AsRangedCoord<Value = f64>,
        Y::CoordDescType: ValueFormatter<f64>,
    {
        root.fill(&WHITE)?;
        let (x0, x1) = self.x_range;
        let x_fmt = linear_tick_formatter(x0, x1);
        let mut chart = ChartBuilder::on(root)
            .caption(self.title, (FONT, 22))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(80)
            .build_cartesian_2d(x0..x1, y_spec)?;
        chart
            .configure_mesh()
            .x_desc(self.x_label)
            .y_desc(self.y_label)
            .x_label_formatter(&x_fmt)
            .y_label_formatter(y_fmt)
            .label_style((FONT, 13))
            .axis_desc_style((FONT, 15))
            .light_line_style(RGBColor(235, 235, 235))
            .bold_line_style(RGBColor(210, 210, 210))
            .draw()?;
        for (i, s) in self.series.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let style = color.stroke_width(2);
            chart
                .draw_series(LineSeries::new(s.points.iter().copied(), style))?
                .label(s.name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
            if s.points.len() <= MARKER_LIMIT {
                chart.draw_series(s.points.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
            }
        }
        if self.series.len() > 1 {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .label_font((FONT, 14))
                .background_style(WHITE.mix(0.85))
                .border_style(RGBColor(160, 160, 160))
                .draw()?;
        }
        Ok(())
    }
}

/// Smallest and largest of a non-empty set of finite values.
fn min_max(values: impl Iterator<Item = f64>) -> (f64, f64) {
    values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)))
}

/// A linear axis range around [lo, hi] with 5% margins; a single value gets a
/// range of its own size around it (or [-1, 1] around zero). Never overflows.
fn pad_linear(lo: f64, hi: f64) -> (f64, f64) {
    // Half the span, computed so that [-MAX, MAX] does not overflow.
    let half = hi / 2.0 - lo / 2.0;
    let pad = if half > 0.0 {
        half * 0.1
    } else if lo != 0.0 {
        lo.abs() * 0.1
    } else {
        1.0
    };
    let (mut a, mut b) = (lo - pad, hi + pad);
    if !a.is_finite() {
        a = lo;
    }
    if !b.is_finite() {
        b = hi;
    }
    // A pad lost to rounding (huge values, tiny span) still needs a non-empty range.
    if a >= b {
        (a, b) = (next_down(lo), next_up(hi));
    }
    (a, b)
}

/// A log axis range around [lo, hi] (both in the log band) with 5% margins in log
/// space, dropped where they would make the axis' top over bottom overflow; a single
/// value gets a factor of 2 either side.
fn pad_log(lo: f64, hi: f64) -> (f64, f64) {
    let ratio = hi / lo;
    let factor = if ratio > 1.0 && ratio.is_finite() { ratio.powf(0.05) } else { 2.0 };
    let factor = factor.max(1.0 + 1e-9);
    let (mut a, mut b) = (lo / factor, hi * factor);
    if !(a > 0.0) {
        a = lo;
    }
    if !b.is_finite() {
        b = hi;
    }
    if !(b / a).is_finite() {
        (a, b) = (lo, hi);
    }
    if a >= b {
        (a, b) = (lo, next_up(hi));
    }
    (a, b)
}

fn next_up(v: f64) -> f64 {
    if v == f64::MAX {
        return v;
    }
    if v == 0.0 {
        return f64::from_bits(1);
    }
    let bits = v.to_bits();
    f64::from_bits(if v > 0.0 { bits + 1 } else { bits - 1 })
}

fn next_down(v: f64) -> f64 {
    -next_up(-v)
}

/// Tick labels for a linear axis over [lo, hi]: as many decimals as the tick spacing
/// needs, and scientific notation for very large or very small magnitudes.
fn linear_tick_formatter(lo: f64, hi: f64) -> impl Fn(&f64) -> String {
    let step = (hi / 2.0 - lo / 2.0) / 5.0; // about a tenth of the span
    let magnitude = lo.abs().max(hi.abs());
    move |&v| {
        if !(step > 0.0) || !step.is_finite() || v == 0.0 {
            return compact(v);
        }
        let step_exp = step.log10().floor() as i32;
        if magnitude >= 1e6 || magnitude < 1e-3 {
            let mag_exp = magnitude.log10().floor() as i32;
            let digits = (mag_exp - step_exp + 1).clamp(1, 16) as usize;
            trim_sci(&format!("{v:.digits$e}"))
        } else {
            let decimals = (1 - step_exp).clamp(0, 16) as usize;
            let s = trim_fixed(&format!("{v:.decimals$}"));
            if s == "-0" {
                "0".into()
            } else {
                s
            }
        }
    }
}

/// Tick positions of a log axis over [lo, hi] (0 < lo < hi).
struct LogTicks {
    /// Labelled ticks.
    bold: Vec<f64>,
    /// Finer grid lines.
    light: Vec<f64>,
    /// The range is too narrow for 1-2-5 ticks: `bold` is evenly spaced instead.
    linear: bool,
}

/// Powers of ten (at most about 10 of them labelled, the others as grid lines),
/// else 1-2-5 or 1..9 times powers of ten when the range holds fewer than three
/// powers, else evenly spaced ticks for a range narrower than that.
fn log_ticks(lo: f64, hi: f64) -> LogTicks {
    let (e0, e1) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
    let inside = |v: &f64| *v >= lo && *v <= hi;
    let times = |mantissas: &[f64]| -> Vec<f64> {
        (e0..=e1).flat_map(|e| mantissas.iter().map(move |m| m * pow10(e))).filter(inside).collect()
    };
    let powers = (e0..=e1).filter(|&e| inside(&pow10(e))).count() as i32;
    if powers >= 3 {
        // Label every k-th decade, k round, for at most about 10 labels.
        let k = [1, 2, 3, 5, 10, 20, 25, 50, 100].into_iter().find(|k| powers / k <= 10).unwrap_or(100);
        let decades = |step: i32| -> Vec<f64> {
            (e0..=e1).filter(|e| e.rem_euclid(step) == 0).map(pow10).filter(inside).collect()
        };
        let light =
            if k == 1 { times(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]) } else { decades((k / 5).max(1)) };
        return LogTicks { bold: decades(k), light, linear: false };
    }
    let all_digits = times(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]);
    let one_two_five = times(&[1.0, 2.0, 5.0]);
    if one_two_five.len() >= 3 {
        return LogTicks { bold: one_two_five, light: all_digits, linear: false };
    }
    if all_digits.len() >= 3 {
        return LogTicks { bold: all_digits, light: vec![], linear: false };
    }
    LogTicks { bold: linear_ticks(lo, hi), light: vec![], linear: true }
}

/// 10^e, as the nearest double (powi drifts for large |e|).
fn pow10(e: i32) -> f64 {
    format!("1e{e}").parse().unwrap_or(f64::NAN)
}

/// About five evenly spaced round values (1, 2 or 5 times a power of ten apart) in [lo, hi].
fn linear_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let raw = (hi / 2.0 - lo / 2.0) / 2.5;
    if !(raw > 0.0) || !raw.is_finite() {
        return vec![lo];
    }
    let base = pow10(raw.log10().floor() as i32);
    let step = [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * base).find(|&s| s >= raw).unwrap_or(10.0 * base);
    let first = (lo / step).ceil();
    (0..20).map(|i| (first + i as f64) * step).take_while(|&v| v <= hi).collect()
}

/// Tick labels for a log axis: a few significant digits each.
fn log_tick_label(v: &f64) -> String {
    compact(*v)
}

/// A short rendering of one number: up to 4 significant digits, scientific notation
/// outside [1e-3, 1e6).
fn compact(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return if v == 0.0 { "0".into() } else { v.to_string() };
    }
    let a = v.abs();
    if !(1e-3..1e6).contains(&a) {
        return trim_sci(&format!("{v:.3e}"));
    }
    let decimals = (3 - a.log10().floor() as i32).clamp(0, 6) as usize;
    trim_fixed(&format!("{v:.decimals$}"))
}

/// "1.500" -> "1.5", "2.000" -> "2".
fn trim_fixed(s: &str) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s.to_string()
    }
}

/// "1.500e6" -> "1.5e6", "2.000e-7" -> "2e-7".
fn trim_sci(s: &str) -> String {
    match s.split_once('e') {
        Some((mantissa, exp)) => format!("{}e{exp}", trim_fixed(mantissa)),
        None => s.to_string(),
    }
}

/// Renders with `draw` into a hidden temporary file beside `path` (keeping the
/// extension, which tells the PNG encoder its format), then renames it over `path`.
/// The temporary file is removed when drawing fails.
fn write_atomically(
    path: &Path,
    format: Format,
    draw: impl FnOnce(&Path) -> std::result::Result<(), String>,
) -> Result<()> {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let name = path.file_name().ok_or_else(|| data_err(path, None, "chart path has no file name"))?.to_string_lossy();
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        return Err(data_err(path, None, format!("cannot write chart: folder {} does not exist", dir.display())));
    }
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.tmp-{}-{n}.{}", std::process::id(), format.ext()));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| draw(&tmp)))
        .unwrap_or_else(|_| Err("the plotting library panicked".to_string()));
    let finish = |r: std::result::Result<(), String>| -> Result<()> {
        r.map_err(|e| data_err(path, None, format!("cannot draw chart: {e}")))?;
        fs::rename(&tmp, path).map_err(|e| data_err(path, None, format!("cannot write chart: {e}")))
    };
    let outcome = finish(result);
    if outcome.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    outcome
}
