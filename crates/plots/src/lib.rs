//! strata-plots: the charts strata writes, each as PNG and SVG: a run's loss curves and DWA
//! weight heatmap here, charts comparing runs in [`comparison`].
//!
//! Text is set in DejaVu Sans, embedded in the binary (see `assets/DejaVuSans-LICENSE.txt`)
//! and registered with plotters once. Every chart implements [`Chart`] once and
//! [`render_both`] draws it to both backends.

// Library code returns errors and never panics on its own (see strata-train's lib.rs).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod comparison;

use plotters::coord::Shift;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::prelude::*;
use plotters::style::register_font;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use strata_tensor::{Error, Result};

/// DejaVu Sans, used for every label.
static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
/// Font family name the charts ask for.
pub(crate) const FAMILY: &str = "sans-serif";
/// Size of the loss-curve images in pixels.
pub const LOSS_SIZE: (u32, u32) = (900, 560);
/// Size of the DWA heatmap images in pixels.
pub const HEATMAP_SIZE: (u32, u32) = (900, 720);
/// Largest grid (rows and columns) whose cells get their value printed.
const MAX_ANNOTATED: usize = 16;

/// Registers the embedded font with plotters (once per process).
fn ensure_font() -> Result<()> {
    static REGISTERED: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            register_font(FAMILY, FontStyle::Normal, FONT)
                .map_err(|_| "the embedded DejaVu Sans font cannot be parsed".to_owned())
        })
        .clone()
        .map_err(Error::Invalid)
}

/// A chart that can draw itself onto any plotters backend.
pub trait Chart {
    /// Draws the whole chart (background included) onto `root`.
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB>;
}

/// What drawing onto backend `DB` returns.
pub type DrawResult<DB> =
    std::result::Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

/// Draws `chart` to `<out_dir>/<stem>.png` and `<out_dir>/<stem>.svg` at `size` pixels.
///
/// Each file is written under a temporary name and renamed into place.
pub fn render_both<C: Chart>(
    out_dir: &Path,
    stem: &str,
    size: (u32, u32),
    chart: &C,
) -> Result<()> {
    ensure_font()?;
    std::fs::create_dir_all(out_dir).map_err(Error::io(out_dir))?;
    let pid = std::process::id();
    write_via_temp(out_dir, stem, "png", pid, |tmp| {
        let root = BitMapBackend::new(tmp, size).into_drawing_area();
        chart.draw(&root)?;
        root.present()
    })?;
    write_via_temp(out_dir, stem, "svg", pid, |tmp| {
        let root = SVGBackend::new(tmp, size).into_drawing_area();
        chart.draw(&root)?;
        root.present()
    })
}

/// Runs `render` on a temporary file next to `<stem>.<ext>`, then renames it into place.
fn write_via_temp<E: std::fmt::Display>(
    out_dir: &Path,
    stem: &str,
    ext: &str,
    pid: u32,
    render: impl FnOnce(&Path) -> std::result::Result<(), E>,
) -> Result<()> {
    let target = out_dir.join(format!("{stem}.{ext}"));
    // The bitmap encoder picks the format from the extension, so keep it last.
    let tmp: PathBuf = out_dir.join(format!(".{stem}.tmp-{pid}.{ext}"));
    let result = render(&tmp)
        .map_err(|e| Error::Invalid(format!("cannot draw {}: {e}", target.display())))
        .and_then(|()| std::fs::rename(&tmp, &target).map_err(Error::io(&target)));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Writes `loss.png` and `loss.svg`: training and validation loss against step, with a
/// dashed vertical line at each step in `growth` (where the model grew).
///
/// Non-finite points are skipped. With no (finite) points at all the chart is still written,
/// with empty axes and a "no data" note.
pub fn plot_loss_curves(
    out_dir: &Path,
    title: &str,
    train: &[(u64, f64)],
    val: &[(u64, f64)],
    growth: &[u64],
) -> Result<()> {
    let finite = |points: &[(u64, f64)]| -> Vec<(f64, f64)> {
        points
            .iter()
            .filter(|(_, y)| y.is_finite())
            .map(|&(x, y)| (x as f64, y))
            .collect()
    };
    let chart = LossChart {
        title: title.to_owned(),
        train: finite(train),
        val: finite(val),
        growth: growth.iter().map(|&s| s as f64).collect(),
    };
    let skipped = train.len() + val.len() - chart.train.len() - chart.val.len();
    if skipped > 0 {
        tracing::warn!(skipped, "loss plot: skipping non-finite points");
    }
    render_both(out_dir, "loss", LOSS_SIZE, &chart)
}

/// Training and validation loss curves.
struct LossChart {
    title: String,
    train: Vec<(f64, f64)>,
    val: Vec<(f64, f64)>,
    /// Steps at which the model grew.
    growth: Vec<f64>,
}

/// Line colour of the training curve.
const TRAIN_COLOR: RGBColor = RGBColor(31, 119, 180);
/// Line colour of the validation curve.
const VAL_COLOR: RGBColor = RGBColor(214, 39, 40);

impl Chart for LossChart {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        root.fill(&WHITE)?;
        let all = || self.train.iter().chain(&self.val);
        let (x0, x1) = match padded_range(all().map(|p| p.0), 0.0) {
            (0.0, 1.0) if self.train.is_empty() && self.val.is_empty() => (0.0, 10.0),
            range => range,
        };
        let (y0, y1) = padded_range(all().map(|p| p.1), 0.05);
        let decimals = label_decimals(y1 - y0);
        let x_format = |x: &f64| {
            // Steps are integers: leave fractional ticks unlabelled.
            if (x - x.round()).abs() < 1e-9 {
                format!("{x:.0}")
            } else {
                String::new()
            }
        };
        let y_format = move |y: &f64| format!("{y:.decimals$}");
        let mut chart = line_frame(
            root,
            &self.title,
            (x0..x1, y0..y1),
            ("step", "loss"),
            (&x_format, &y_format),
        )?;
        if !self.train.is_empty() {
            let style = TRAIN_COLOR.stroke_width(2);
            chart
                // A single point draws no line segment: mark it instead.
                .draw_series(
                    LineSeries::new(self.train.iter().copied(), style)
                        .point_size(if self.train.len() == 1 { 3 } else { 0 }),
                )?
                .label("train")
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], style));
        }
        if !self.val.is_empty() {
            let style = VAL_COLOR.stroke_width(2);
            chart
                .draw_series(LineSeries::new(self.val.iter().copied(), style).point_size(3))?
                .label("val")
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], style));
        }
        let grey = RGBColor(110, 110, 110).stroke_width(1);
        for (i, &step) in self.growth.iter().enumerate() {
            let line =
                chart.draw_series(DashedLineSeries::new([(step, y0), (step, y1)], 6, 4, grey))?;
            if i == 0 {
                line.label("growth")
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], grey));
            }
        }
        if self.train.is_empty() && self.val.is_empty() {
            let (w, h) = root.dim_in_pixel();
            let note = TextStyle::from((FAMILY, 20).into_font())
                .color(&RGBColor(120, 120, 120))
                .pos(Pos::new(HPos::Center, VPos::Center));
            root.draw(&Text::new("no data", (w as i32 / 2, h as i32 / 2), note))?;
        } else {
            draw_legend(&mut chart)?;
        }
        Ok(())
    }
}

/// A tick-label formatter.
pub(crate) type TickFormat<'f> = &'f dyn Fn(&f64) -> String;

/// The plotting area of a line chart with f64 axes.
pub(crate) type LineChart<'a, DB> = ChartContext<
    'a,
    DB,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

/// The axes of a line chart over `ranges`: caption, axis descriptions, tick labels by
/// `formats` and a light grid.
pub(crate) fn line_frame<'a, DB: DrawingBackend>(
    root: &'a DrawingArea<DB, Shift>,
    title: &str,
    ranges: (std::ops::Range<f64>, std::ops::Range<f64>),
    axes: (&str, &str),
    formats: (TickFormat<'_>, TickFormat<'_>),
) -> std::result::Result<LineChart<'a, DB>, DrawingAreaErrorKind<DB::ErrorType>> {
    let mut chart = ChartBuilder::on(root)
        .caption(title, (FAMILY, 22))
        .margin(16)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(ranges.0, ranges.1)?;
    chart
        .configure_mesh()
        .x_desc(axes.0)
        .y_desc(axes.1)
        .label_style((FAMILY, 14))
        .axis_desc_style((FAMILY, 16))
        .x_label_formatter(formats.0)
        .y_label_formatter(formats.1)
        .light_line_style(RGBColor(235, 235, 235))
        .draw()?;
    Ok(chart)
}

/// Draws the series legend in the upper right corner of `chart`.
pub(crate) fn draw_legend<'a, DB, CT>(chart: &mut ChartContext<'a, DB, CT>) -> DrawResult<DB>
where
    DB: DrawingBackend + 'a,
    CT: plotters::coord::CoordTranslate,
{
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font((FAMILY, 15))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
}

/// Decimals that tell apart the ~10 tick labels of an axis spanning `span`.
pub(crate) fn label_decimals(span: f64) -> usize {
    (2.0 - span.log10().floor()).clamp(0.0, 6.0) as usize
}

/// The (min, max) of `values` widened by `pad` of the span; a unit range around a single
/// value or when there are none.
pub(crate) fn padded_range(values: impl Iterator<Item = f64>, pad: f64) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !lo.is_finite() || !hi.is_finite() {
        return (0.0, 1.0);
    }
    if hi - lo <= f64::EPSILON * hi.abs().max(1.0) {
        let half = (lo.abs() * 0.1).max(0.5);
        return (lo - half, hi + half);
    }
    let margin = (hi - lo) * pad;
    (lo - margin, hi + margin)
}

/// Writes `dwa_weights.png` and `dwa_weights.svg`: a heatmap of DWA weights.
///
/// `weights[i][j]` is the weight that the DWA applied after block `i + 1` gives to stack entry
/// `j` (0 = embedding, `j` = output of block `j`); `None` (or a non-finite value) marks an entry
/// it does not read and is drawn gray. Colours diverge around 0: blue negative, white 0, red
/// positive, scaled to the largest magnitude. Rows may have different lengths; an empty matrix
/// is an error.
pub fn plot_dwa_heatmap(out_dir: &Path, weights: &[Vec<Option<f64>>]) -> Result<()> {
    let cols = weights.iter().map(Vec::len).max().unwrap_or(0);
    if weights.is_empty() || cols == 0 {
        return Err(Error::Invalid(format!(
            "DWA heatmap for {}: expected at least one row and one column of weights",
            out_dir.display()
        )));
    }
    let cells: Vec<Vec<Option<f64>>> = weights
        .iter()
        .map(|row| {
            (0..cols)
                .map(|j| row.get(j).copied().flatten().filter(|w| w.is_finite()))
                .collect()
        })
        .collect();
    let values = || cells.iter().flatten().flatten().copied();
    let min = values().fold(f64::INFINITY, f64::min);
    let max = values().fold(f64::NEG_INFINITY, f64::max);
    let (min, max) = if min.is_finite() {
        (min, max)
    } else {
        (0.0, 0.0)
    };
    let scale = min.abs().max(max.abs());
    let chart = HeatmapChart {
        rows: cells.len(),
        cols,
        cells,
        min,
        max,
        scale: if scale > 0.0 { scale } else { 1.0 },
    };
    render_both(out_dir, "dwa_weights", HEATMAP_SIZE, &chart)
}

/// The DWA weight heatmap with its colour bar.
struct HeatmapChart {
    rows: usize,
    cols: usize,
    cells: Vec<Vec<Option<f64>>>,
    min: f64,
    max: f64,
    /// Magnitude mapped to full blue / full red.
    scale: f64,
}

/// Colour of a cell not read by the DWA.
const MISSING_COLOR: RGBColor = RGBColor(215, 215, 215);

/// Diverging colour for `t` in [-1, 1]: blue, white at 0, red.
fn diverging(t: f64) -> RGBColor {
    const BLUE_END: (f64, f64, f64) = (33.0, 102.0, 172.0);
    const RED_END: (f64, f64, f64) = (178.0, 24.0, 43.0);
    let t = t.clamp(-1.0, 1.0);
    let end = if t < 0.0 { BLUE_END } else { RED_END };
    let a = t.abs();
    let mix = |c: f64| (255.0 + (c - 255.0) * a).round() as u8;
    RGBColor(mix(end.0), mix(end.1), mix(end.2))
}

/// An axis of `n` unit cells spanning `0..n`, with key points (labels) at cell centres.
struct CellAxis(usize);

impl Ranged for CellAxis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let span = f64::from(limit.1 - limit.0);
        limit.0 + (value / self.0 as f64 * span).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        let max = hint.max_num_points().max(1);
        let stride = self.0.div_ceil(max).max(1);
        (0..self.0)
            .step_by(stride)
            .map(|k| k as f64 + 0.5)
            .collect()
    }

    fn range(&self) -> std::ops::Range<f64> {
        0.0..self.0 as f64
    }
}

impl Chart for HeatmapChart {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        root.fill(&WHITE)?;
        let (width, _) = root.dim_in_pixel();
        let (main, bar) = root.split_horizontally(width.saturating_sub(130));
        let rows = self.rows;
        let caption = format!("DWA weights (min {:.3}, max {:.3})", self.min, self.max);
        let mut chart = ChartBuilder::on(&main)
            .caption(caption, (FAMILY, 22))
            .margin(16)
            .x_label_area_size(56)
            .y_label_area_size(64)
            .build_cartesian_2d(CellAxis(self.cols), CellAxis(rows))?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_labels(24)
            .y_labels(24)
            .x_desc("source: 0 = embedding, j = output of block j")
            .y_desc("DWA after block i")
            .label_style((FAMILY, 14))
            .axis_desc_style((FAMILY, 16))
            .x_label_formatter(&|x| format!("{}", x.floor() as i64))
            // Row 1 is drawn at the top, like a matrix.
            .y_label_formatter(&|y| format!("{}", rows as i64 - y.floor() as i64))
            .draw()?;
        let top = |i: usize| (rows - 1 - i) as f64;
        chart.draw_series(self.cells.iter().enumerate().flat_map(|(i, row)| {
            row.iter().enumerate().map(move |(j, w)| {
                let color = w.map_or(MISSING_COLOR, |w| diverging(w / self.scale));
                Rectangle::new(
                    [(j as f64, top(i)), (j as f64 + 1.0, top(i) + 1.0)],
                    color.filled(),
                )
            })
        }))?;
        chart.draw_series(self.cells.iter().enumerate().flat_map(|(i, row)| {
            row.iter().enumerate().map(move |(j, _)| {
                Rectangle::new(
                    [(j as f64, top(i)), (j as f64 + 1.0, top(i) + 1.0)],
                    WHITE.stroke_width(1),
                )
            })
        }))?;
        if rows <= MAX_ANNOTATED && self.cols <= MAX_ANNOTATED {
            let (pw, ph) = chart.plotting_area().dim_in_pixel();
            let cell = (pw as f64 / self.cols as f64).min(ph as f64 / rows as f64);
            let size = (cell * 0.28).clamp(8.0, 16.0);
            let decimals = label_decimals(self.scale).saturating_sub(1).max(2);
            for (i, row) in self.cells.iter().enumerate() {
                for (j, w) in row.iter().enumerate() {
                    let Some(w) = w else { continue };
                    let ink = if (w / self.scale).abs() > 0.6 {
                        WHITE
                    } else {
                        BLACK
                    };
                    let style = TextStyle::from((FAMILY, size).into_font())
                        .color(&ink)
                        .pos(Pos::new(HPos::Center, VPos::Center));
                    let centre = (j as f64 + 0.5, top(i) + 0.5);
                    chart.draw_series(std::iter::once(Text::new(
                        format!("{w:.decimals$}"),
                        centre,
                        style,
                    )))?;
                }
            }
        }
        self.draw_colour_bar(&bar)
    }
}

impl HeatmapChart {
    /// A vertical colour bar from `-scale` (blue) to `+scale` (red) with labelled values.
    fn draw_colour_bar<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        const STEPS: usize = 128;
        let s = self.scale;
        let decimals = label_decimals(2.0 * s);
        let mut bar = ChartBuilder::on(area)
            .caption("weight", (FAMILY, 16))
            .margin_top(60)
            .margin_bottom(70)
            .margin_left(8)
            .margin_right(8)
            .y_label_area_size(64)
            .build_cartesian_2d(0.0..1.0, -s..s)?;
        bar.configure_mesh()
            .disable_mesh()
            .disable_x_axis()
            .y_labels(9)
            .label_style((FAMILY, 13))
            .y_label_formatter(&|y| format!("{y:.decimals$}"))
            .draw()?;
        let step = 2.0 * s / STEPS as f64;
        bar.draw_series((0..STEPS).map(|k| {
            let lo = -s + k as f64 * step;
            let colour = diverging((lo + step / 2.0) / s);
            Rectangle::new([(0.0, lo), (1.0, lo + step)], colour.filled())
        }))?;
        bar.draw_series(std::iter::once(Rectangle::new(
            [(0.0, -s), (1.0, s)],
            BLACK.stroke_width(1),
        )))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diverging_colormap_is_centred_on_white() {
        assert_eq!(diverging(0.0), RGBColor(255, 255, 255));
        assert_eq!(diverging(-1.0), RGBColor(33, 102, 172));
        assert_eq!(diverging(1.0), RGBColor(178, 24, 43));
        assert_eq!(diverging(5.0), diverging(1.0));
    }

    #[test]
    fn ranges_are_never_empty() {
        assert_eq!(padded_range(std::iter::empty(), 0.05), (0.0, 1.0));
        let (lo, hi) = padded_range([3.0].into_iter(), 0.05);
        assert!(lo < 3.0 && hi > 3.0);
        let (lo, hi) = padded_range([1.0, 2.0].into_iter(), 0.0);
        assert_eq!((lo, hi), (1.0, 2.0));
    }
}
