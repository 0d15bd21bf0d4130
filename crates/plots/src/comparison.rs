//! Charts that compare runs: several loss curves on one axis, and grouped bars. Each is
//! written as PNG and SVG through [`crate::render_both`].

use crate::{
    Chart, DrawResult, FAMILY, draw_legend, label_decimals, line_frame, padded_range, render_both,
};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;
use strata_tensor::{Error, Result};

/// Size of comparison charts in pixels.
pub const COMPARISON_SIZE: (u32, u32) = (960, 600);

/// A named series of points.
#[derive(Clone, Debug)]
pub struct Series {
    /// Legend label.
    pub label: String,
    /// Points `(x, y)`.
    pub points: Vec<(f64, f64)>,
}

/// Line colours, one per series (cycled).
const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// Writes `<stem>.png` and `<stem>.svg`: one line per series.
pub fn plot_lines(
    out_dir: &Path,
    stem: &str,
    title: &str,
    axes: (&str, &str),
    series: &[Series],
) -> Result<()> {
    render_lines(out_dir, stem, title, axes, series.to_vec(), false)
}

/// [`plot_lines`] with a logarithmic x axis (every x must be positive), for quantities such
/// as FLOPs or parameters that span decades.
pub fn plot_lines_log_x(
    out_dir: &Path,
    stem: &str,
    title: &str,
    axes: (&str, &str),
    series: &[Series],
) -> Result<()> {
    if series
        .iter()
        .flat_map(|s| &s.points)
        .any(|p| p.0 <= 0.0 || p.0.is_nan())
    {
        return Err(Error::Invalid(format!(
            "{stem}: a logarithmic axis needs positive x values"
        )));
    }
    let logged = series
        .iter()
        .map(|s| Series {
            label: s.label.clone(),
            points: s.points.iter().map(|&(x, y)| (x.log10(), y)).collect(),
        })
        .collect();
    render_lines(out_dir, stem, title, axes, logged, true)
}

/// The body of both line plots: refuses a plot without points, then renders the chart
/// (`log_x`: the x values are already log10 and the axis labels show 10^x).
fn render_lines(
    out_dir: &Path,
    stem: &str,
    title: &str,
    axes: (&str, &str),
    series: Vec<Series>,
    log_x: bool,
) -> Result<()> {
    if series.iter().all(|s| s.points.is_empty()) {
        return Err(Error::Invalid(format!("{stem}: no points to plot")));
    }
    let chart = LinesChart {
        title: title.to_owned(),
        x_desc: axes.0.to_owned(),
        y_desc: axes.1.to_owned(),
        series,
        log_x,
    };
    render_both(out_dir, stem, COMPARISON_SIZE, &chart)
}

/// Several curves on one pair of axes.
struct LinesChart {
    title: String,
    x_desc: String,
    y_desc: String,
    series: Vec<Series>,
    /// The x values are log10 of the quantity; ticks show the quantity.
    log_x: bool,
}

impl Chart for LinesChart {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        root.fill(&WHITE)?;
        let points = || self.series.iter().flat_map(|s| s.points.iter());
        let (x0, x1) = padded_range(points().map(|p| p.0), 0.02);
        let (y0, y1) = padded_range(points().map(|p| p.1), 0.05);
        let decimals = label_decimals(y1 - y0);
        let y_format = move |y: &f64| format!("{y:.decimals$}");
        let log_x = self.log_x;
        let x_format = move |x: &f64| {
            if log_x {
                format!("{:.2e}", 10f64.powf(*x))
            } else {
                format!("{x:.3e}")
            }
        };
        let mut chart = line_frame(
            root,
            &self.title,
            (x0..x1, y0..y1),
            (&self.x_desc, &self.y_desc),
            (&x_format, &y_format),
        )?;
        for (i, s) in self.series.iter().enumerate() {
            let style = PALETTE[i % PALETTE.len()].stroke_width(2);
            chart
                .draw_series(LineSeries::new(s.points.iter().copied(), style).point_size(2))?
                .label(s.label.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], style));
        }
        draw_legend(&mut chart)
    }
}

/// Writes `<stem>.png` and `<stem>.svg`: for each category, one bar per series
/// (`series[k].points[i].1` is series `k`'s value in category `i`).
pub fn plot_grouped_bars(
    out_dir: &Path,
    stem: &str,
    title: &str,
    y_desc: &str,
    categories: &[String],
    series: &[Series],
) -> Result<()> {
    if categories.is_empty() || series.iter().any(|s| s.points.len() != categories.len()) {
        return Err(Error::Invalid(format!(
            "{stem}: every series needs one value per category ({})",
            categories.len()
        )));
    }
    let chart = BarsChart {
        title: title.to_owned(),
        y_desc: y_desc.to_owned(),
        categories: categories.to_vec(),
        series: series.to_vec(),
    };
    render_both(out_dir, stem, COMPARISON_SIZE, &chart)
}

/// Grouped bars.
struct BarsChart {
    title: String,
    y_desc: String,
    categories: Vec<String>,
    series: Vec<Series>,
}

impl Chart for BarsChart {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        root.fill(&WHITE)?;
        let values = || {
            self.series
                .iter()
                .flat_map(|s| s.points.iter().map(|p| p.1))
        };
        let (lo, hi) = padded_range(values(), 0.1);
        let mut chart = category_frame(root, &self.title, &self.y_desc, &self.categories, lo..hi)?;
        let k = self.series.len().max(1) as f64;
        let width = 0.8 / k;
        for (j, s) in self.series.iter().enumerate() {
            let color = PALETTE[j % PALETTE.len()];
            let left = |i: usize| i as f64 - 0.4 + j as f64 * width;
            chart
                .draw_series(s.points.iter().enumerate().map(|(i, &(_, v))| {
                    Rectangle::new([(left(i), lo), (left(i) + width * 0.9, v)], color.filled())
                }))?
                .label(s.label.as_str())
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 14, y + 5)], color.filled())
                });
        }
        draw_legend(&mut chart)
    }
}

/// Categories a chart names side by side; with more, the names stand upright.
const ROTATE_AFTER: usize = 6;

/// The axes of a chart with one slot per category on x: caption, category names under the
/// slots, `y_desc` and a light horizontal grid over `y`.
fn category_frame<'a, DB: DrawingBackend>(
    root: &'a DrawingArea<DB, Shift>,
    title: &str,
    y_desc: &str,
    categories: &[String],
    y: std::ops::Range<f64>,
) -> std::result::Result<crate::LineChart<'a, DB>, DrawingAreaErrorKind<DB::ErrorType>> {
    let decimals = label_decimals(y.end - y.start);
    let y_format = move |y: &f64| format!("{y:.decimals$}");
    let n = categories.len();
    let upright = n > ROTATE_AFTER;
    // An upright name turns about its middle: leading spaces (two per character, a space
    // being about half a letter wide) put the visible name below the axis.
    let names: Vec<String> = categories
        .iter()
        .map(|c| match upright {
            true => format!("{}{c}", " ".repeat(2 * c.chars().count())),
            false => c.clone(),
        })
        .collect();
    let x_format = move |x: &f64| {
        let i = x.round();
        if (x - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < names.len() {
            names[i as usize].clone()
        } else {
            String::new()
        }
    };
    // More categories than fit side by side: their names stand upright under the slots.
    let longest = categories
        .iter()
        .map(|c| c.chars().count())
        .max()
        .unwrap_or(0) as u32;
    let label_area = if upright { 16 + 7 * longest } else { 60 };
    let mut x_style = TextStyle::from((FAMILY, 12).into_font());
    if upright {
        x_style = x_style.transform(FontTransform::Rotate90);
    }
    let mut chart = ChartBuilder::on(root)
        .caption(title, (FAMILY, 22))
        .margin(16)
        .x_label_area_size(label_area)
        .y_label_area_size(70)
        .build_cartesian_2d(-0.6..(n as f64 - 0.4), y)?;
    chart
        .configure_mesh()
        .x_labels(n)
        .y_desc(y_desc)
        .label_style((FAMILY, 12))
        .x_label_style(x_style)
        .axis_desc_style((FAMILY, 15))
        .x_label_formatter(&x_format)
        .y_label_formatter(&y_format)
        .disable_x_mesh()
        .light_line_style(RGBColor(235, 235, 235))
        .draw()?;
    Ok(chart)
}

/// One estimate with its interval, for [`plot_intervals`].
#[derive(Clone, Debug)]
pub struct Interval {
    /// Category name under the slot.
    pub label: String,
    /// Lower end.
    pub low: f64,
    /// Point estimate.
    pub estimate: f64,
    /// Upper end.
    pub high: f64,
}

/// Writes `<stem>.png` and `<stem>.svg`: one point with an error bar per category, and a
/// dashed reference line at `reference` (e.g. 1 for multipliers).
pub fn plot_intervals(
    out_dir: &Path,
    stem: &str,
    title: &str,
    y_desc: &str,
    intervals: &[Interval],
    reference: f64,
) -> Result<()> {
    if intervals.is_empty() {
        return Err(Error::Invalid(format!("{stem}: no intervals to plot")));
    }
    let chart = IntervalsChart {
        title: title.to_owned(),
        y_desc: y_desc.to_owned(),
        intervals: intervals.to_vec(),
        reference,
    };
    render_both(out_dir, stem, COMPARISON_SIZE, &chart)
}

/// Estimates with error bars.
struct IntervalsChart {
    title: String,
    y_desc: String,
    intervals: Vec<Interval>,
    reference: f64,
}

impl Chart for IntervalsChart {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        root.fill(&WHITE)?;
        let values = self
            .intervals
            .iter()
            .flat_map(|i| [i.low, i.estimate, i.high])
            .chain([self.reference]);
        let (lo, hi) = padded_range(values, 0.1);
        let labels: Vec<String> = self.intervals.iter().map(|i| i.label.clone()).collect();
        let mut chart = category_frame(root, &self.title, &self.y_desc, &labels, lo..hi)?;
        let n = self.intervals.len() as f64;
        let grey = RGBColor(120, 120, 120).stroke_width(1);
        chart.draw_series(DashedLineSeries::new(
            [(-0.6, self.reference), (n - 0.4, self.reference)],
            6,
            4,
            grey,
        ))?;
        let color = PALETTE[0];
        let style = color.stroke_width(2);
        for (k, i) in self.intervals.iter().enumerate() {
            let x = k as f64;
            // The whisker and its two caps.
            for path in [
                vec![(x, i.low), (x, i.high)],
                vec![(x - 0.08, i.low), (x + 0.08, i.low)],
                vec![(x - 0.08, i.high), (x + 0.08, i.high)],
            ] {
                chart.draw_series(std::iter::once(PathElement::new(path, style)))?;
            }
        }
        chart.draw_series(
            self.intervals
                .iter()
                .enumerate()
                .map(|(k, i)| Circle::new((k as f64, i.estimate), 5, color.filled())),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_written_and_bad_inputs_refused() {
        let dir = tempfile::tempdir().unwrap();
        let series = vec![
            Series {
                label: "a".to_owned(),
                points: vec![(1e9, 2.0), (2e9, 1.8)],
            },
            Series {
                label: "b".to_owned(),
                points: vec![(1e9, 2.1), (3e9, 1.7)],
            },
        ];
        plot_lines(dir.path(), "lines", "t", ("FLOPs", "loss"), &series).unwrap();
        plot_lines_log_x(dir.path(), "log", "t", ("FLOPs", "loss"), &series).unwrap();
        assert!(std::fs::metadata(dir.path().join("log.png")).unwrap().len() > 500);
        let zero = vec![Series {
            label: "z".to_owned(),
            points: vec![(0.0, 1.0)],
        }];
        assert!(plot_lines_log_x(dir.path(), "bad-log", "t", ("x", "y"), &zero).is_err());
        let cats = vec!["x".to_owned(), "y".to_owned()];
        plot_grouped_bars(dir.path(), "bars", "t", "loss", &cats, &series).unwrap();
        for f in ["lines.png", "lines.svg", "bars.png", "bars.svg"] {
            assert!(
                std::fs::metadata(dir.path().join(f)).unwrap().len() > 500,
                "{f}"
            );
        }
        assert!(plot_grouped_bars(dir.path(), "bad", "t", "loss", &cats[..1], &series).is_err());
        let intervals = vec![Interval {
            label: "v".to_owned(),
            low: 0.9,
            estimate: 1.2,
            high: 1.5,
        }];
        plot_intervals(dir.path(), "intervals", "t", "multiplier", &intervals, 1.0).unwrap();
        assert!(
            std::fs::metadata(dir.path().join("intervals.png"))
                .unwrap()
                .len()
                > 500
        );
        assert!(plot_intervals(dir.path(), "none", "t", "m", &[], 1.0).is_err());
        assert!(plot_lines(dir.path(), "empty", "t", ("x", "y"), &[]).is_err());
    }
}
