//! Charts that compare runs: several loss curves on one axis, and grouped bars. Each is
//! written as PNG and SVG through [`crate::plots::render_both`].

use crate::plots::{
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
    if series.iter().all(|s| s.points.is_empty()) {
        return Err(Error::Invalid(format!("{stem}: no points to plot")));
    }
    let chart = LinesChart {
        title: title.to_owned(),
        x_desc: axes.0.to_owned(),
        y_desc: axes.1.to_owned(),
        series: series.to_vec(),
    };
    render_both(out_dir, stem, COMPARISON_SIZE, &chart)
}

/// Several curves on one pair of axes.
struct LinesChart {
    title: String,
    x_desc: String,
    y_desc: String,
    series: Vec<Series>,
}

impl Chart for LinesChart {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        root.fill(&WHITE)?;
        let points = || self.series.iter().flat_map(|s| s.points.iter());
        let (x0, x1) = padded_range(points().map(|p| p.0), 0.02);
        let (y0, y1) = padded_range(points().map(|p| p.1), 0.05);
        let decimals = label_decimals(y1 - y0);
        let y_format = move |y: &f64| format!("{y:.decimals$}");
        let x_format = |x: &f64| format!("{x:.3e}");
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
        let decimals = label_decimals(hi - lo);
        let y_format = move |y: &f64| format!("{y:.decimals$}");
        let n = self.categories.len();
        let names = self.categories.clone();
        let x_format = move |x: &f64| {
            let i = x.round();
            if (x - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < names.len() {
                names[i as usize].clone()
            } else {
                String::new()
            }
        };
        let mut chart = ChartBuilder::on(root)
            .caption(&self.title, (FAMILY, 22))
            .margin(16)
            .x_label_area_size(60)
            .y_label_area_size(70)
            .build_cartesian_2d(-0.6..(n as f64 - 0.4), lo..hi)?;
        chart
            .configure_mesh()
            .x_labels(n)
            .y_desc(self.y_desc.as_str())
            .label_style((FAMILY, 12))
            .axis_desc_style((FAMILY, 15))
            .x_label_formatter(&x_format)
            .y_label_formatter(&y_format)
            .disable_x_mesh()
            .light_line_style(RGBColor(235, 235, 235))
            .draw()?;
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
        let cats = vec!["x".to_owned(), "y".to_owned()];
        plot_grouped_bars(dir.path(), "bars", "t", "loss", &cats, &series).unwrap();
        for f in ["lines.png", "lines.svg", "bars.png", "bars.svg"] {
            assert!(
                std::fs::metadata(dir.path().join(f)).unwrap().len() > 500,
                "{f}"
            );
        }
        assert!(plot_grouped_bars(dir.path(), "bad", "t", "loss", &cats[..1], &series).is_err());
        assert!(plot_lines(dir.path(), "empty", "t", ("x", "y"), &[]).is_err());
    }
}
