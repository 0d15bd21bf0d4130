//! Plots: PNG and SVG files exist, decode to the right size and carry their labels.

use std::path::Path;
use strata_plots::{HEATMAP_SIZE, LOSS_SIZE, plot_dwa_heatmap, plot_loss_curves};

/// Width and height from a PNG's IHDR chunk, checking the signature.
fn png_size(path: &Path) -> (u32, u32) {
    let bytes = std::fs::read(path).unwrap();
    assert!(
        bytes.len() > 33,
        "{} is too short for a PNG",
        path.display()
    );
    assert_eq!(
        &bytes[..8],
        b"\x89PNG\r\n\x1a\n",
        "{} lacks the PNG signature",
        path.display()
    );
    assert_eq!(&bytes[12..16], b"IHDR");
    let be = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
    (be(16), be(20))
}

/// The text of an SVG file, checking it looks like one.
fn svg_text(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(
        text.contains("<svg") && text.trim_end().ends_with("</svg>"),
        "{} is not an SVG",
        path.display()
    );
    text
}

/// Whether `svg` holds a text element with exactly `text` (already XML-escaped).
fn has_text(svg: &str, text: &str) -> bool {
    svg.contains(&format!(">\n{text}\n</text>"))
}

/// Whether the out folder holds anything besides the expected files.
fn assert_only(dir: &Path, expected: &[&str]) {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut expected: Vec<String> = expected.iter().map(|s| (*s).to_owned()).collect();
    expected.sort();
    assert_eq!(names, expected);
}

#[test]
fn loss_curves_are_written_as_png_and_svg() {
    let dir = tempfile::tempdir().unwrap();
    let train: Vec<(u64, f64)> = (1..=200)
        .map(|s| (s * 5, 6.0 * (-(s as f64) / 80.0).exp() + 1.5))
        .collect();
    let val: Vec<(u64, f64)> = (0..=10)
        .map(|k| (k * 100, 6.2 * (-(k as f64) / 4.0).exp() + 1.7))
        .collect();
    plot_loss_curves(
        dir.path(),
        "tiny-shakespeare (denseformer-4x5)",
        &train,
        &val,
        &[400, 700],
    )
    .unwrap();
    assert_eq!(png_size(&dir.path().join("loss.png")), LOSS_SIZE);
    let svg = svg_text(&dir.path().join("loss.svg"));
    for text in [
        "tiny-shakespeare (denseformer-4x5)",
        "train",
        "val",
        "step",
        "loss",
        "growth",
    ] {
        assert!(has_text(&svg, text), "loss.svg lacks text {text:?}");
    }
    assert_only(dir.path(), &["loss.png", "loss.svg"]);
}

#[test]
fn title_text_is_escaped_in_svg() {
    let dir = tempfile::tempdir().unwrap();
    plot_loss_curves(dir.path(), "a<b & c", &[(0, 1.0), (1, 0.5)], &[], &[1]).unwrap();
    let svg = svg_text(&dir.path().join("loss.svg"));
    assert!(has_text(&svg, "a&lt;b &amp; c"), "title not escaped");
}

#[test]
fn empty_and_degenerate_series_still_plot() {
    let dir = tempfile::tempdir().unwrap();
    plot_loss_curves(dir.path(), "empty", &[], &[], &[]).unwrap();
    assert_eq!(png_size(&dir.path().join("loss.png")), LOSS_SIZE);
    assert!(has_text(&svg_text(&dir.path().join("loss.svg")), "no data"));

    let one = tempfile::tempdir().unwrap();
    plot_loss_curves(one.path(), "one point", &[(7, 3.0)], &[(7, f64::NAN)], &[]).unwrap();
    assert_eq!(png_size(&one.path().join("loss.png")), LOSS_SIZE);
    let svg = svg_text(&one.path().join("loss.svg"));
    assert!(has_text(&svg, "train") && !has_text(&svg, "val"));
}

/// DWA weights of a `blocks`-block model: row i (after block i + 1) reads entries 0..=i + 1,
/// with every other entry skipped when `dilated`.
fn dwa_weights(blocks: usize, dilated: bool) -> Vec<Vec<Option<f64>>> {
    (0..blocks)
        .map(|i| {
            (0..=blocks)
                .map(|j| {
                    let connected = j <= i + 1 && (!dilated || (i + 1 - j) % 2 == 0);
                    connected.then(|| {
                        if j == i + 1 {
                            1.0
                        } else {
                            (j as f64 - 1.5) * 0.1
                        }
                    })
                })
                .collect()
        })
        .collect()
}

#[test]
fn heatmap_of_three_block_model() {
    let dir = tempfile::tempdir().unwrap();
    let weights = dwa_weights(3, false);
    plot_dwa_heatmap(dir.path(), &weights).unwrap();
    assert_eq!(png_size(&dir.path().join("dwa_weights.png")), HEATMAP_SIZE);
    let svg = svg_text(&dir.path().join("dwa_weights.svg"));
    assert!(svg.contains("DWA weights (min -0.150, max 1.000)"));
    // Cell values are printed on small grids.
    assert!(
        has_text(&svg, "-0.15") && has_text(&svg, "-0.05"),
        "cell values missing"
    );
    assert_only(dir.path(), &["dwa_weights.png", "dwa_weights.svg"]);
}

#[test]
fn heatmap_of_large_dilated_model_omits_values() {
    let dir = tempfile::tempdir().unwrap();
    plot_dwa_heatmap(dir.path(), &dwa_weights(24, true)).unwrap();
    assert_eq!(png_size(&dir.path().join("dwa_weights.png")), HEATMAP_SIZE);
    let svg = svg_text(&dir.path().join("dwa_weights.svg"));
    assert!(!has_text(&svg, "-0.15") && !has_text(&svg, "-0.05"));
}

#[test]
fn heatmap_edge_cases() {
    let dir = tempfile::tempdir().unwrap();
    let err = plot_dwa_heatmap(dir.path(), &[]).unwrap_err().to_string();
    assert!(err.contains("at least one row"), "{err}");
    // All cells unconnected, or all zero: still a valid plot.
    plot_dwa_heatmap(dir.path(), &[vec![None, None]]).unwrap();
    plot_dwa_heatmap(dir.path(), &[vec![Some(0.0)], vec![Some(0.0), Some(0.0)]]).unwrap();
    assert_eq!(png_size(&dir.path().join("dwa_weights.png")), HEATMAP_SIZE);
}
