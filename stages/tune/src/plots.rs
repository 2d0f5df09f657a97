//! PNG figures: GM-Coord's per-step curves and the classification confusion matrix, drawn with
//! plotters into an RGB buffer and encoded with `png` (no system fonts needed).

use std::path::Path;
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

use crate::error::{Result, TuneError};

const FONT: &str = "sans-serif";

fn plot_error(path: &Path, message: impl ToString) -> TuneError {
    TuneError::File {
        path: path.display().to_string(),
        message: format!("drawing the plot: {}", message.to_string()),
    }
}

fn ensure_font(path: &Path) -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    if *REGISTERED
        .get_or_init(|| register_font(FONT, FontStyle::Normal, dejavu::sans::regular()).is_ok())
    {
        Ok(())
    } else {
        Err(plot_error(
            path,
            "the embedded DejaVu Sans font could not be parsed",
        ))
    }
}

/// Draws with `draw` on a white `width`×`height` canvas and writes it to `path` as PNG.
fn render(
    path: &Path,
    (width, height): (u32, u32),
    draw: impl FnOnce(&DrawingArea<BitMapBackend<'_>, Shift>) -> std::result::Result<(), String>,
) -> Result<()> {
    ensure_font(path)?;
    let mut pixels = vec![255u8; width as usize * height as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (width, height)).into_drawing_area();
        draw(&root).map_err(|m| plot_error(path, m))?;
        root.present().map_err(|e| plot_error(path, e))?;
    }
    let file = std::fs::File::create(path).map_err(|e| plot_error(path, e))?;
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(|e| plot_error(path, e))?;
    writer
        .write_image_data(&pixels)
        .map_err(|e| plot_error(path, e))?;
    writer.finish().map_err(|e| plot_error(path, e))
}

/// A range covering the finite values, padded so a flat series is still visible.
fn padded_range(values: impl Iterator<Item = f64>) -> std::ops::Range<f64> {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return 0.0..1.0;
    }
    let pad = ((hi - lo) * 0.05).max(1e-3);
    (lo - pad)..(hi + pad)
}

/// One panel of curves over the step index.
pub struct Panel<'a> {
    pub title: &'a str,
    pub series: Vec<(&'a str, &'a [f64])>,
}

/// Stacked panels of per-step curves; non-finite points are skipped.
pub fn curves_png(path: &Path, steps: &[f64], panels: &[Panel<'_>]) -> Result<()> {
    let height = 320 * panels.len().max(1) as u32;
    render(path, (900, height), |root| {
        let text = |e: DrawingAreaErrorKind<_>| e.to_string();
        let areas = root.split_evenly((panels.len().max(1), 1));
        for (panel, area) in panels.iter().zip(&areas) {
            let x = padded_range(steps.iter().copied());
            let y = padded_range(panel.series.iter().flat_map(|(_, v)| v.iter().copied()));
            let mut chart = ChartBuilder::on(area)
                .caption(panel.title, (FONT, 20))
                .margin(12)
                .x_label_area_size(36)
                .y_label_area_size(64)
                .build_cartesian_2d(x, y)
                .map_err(text)?;
            chart
                .configure_mesh()
                .x_desc("step")
                .label_style((FONT, 13))
                .axis_desc_style((FONT, 14))
                .light_line_style(RGBColor(236, 236, 236))
                .draw()
                .map_err(text)?;
            for (k, (label, values)) in panel.series.iter().enumerate() {
                let color = Palette99::pick(k).to_rgba();
                let points = steps
                    .iter()
                    .zip(values.iter())
                    .filter(|(_, v)| v.is_finite())
                    .map(|(&s, &v)| (s, v));
                chart
                    .draw_series(LineSeries::new(points, color.stroke_width(2)))
                    .map_err(text)?
                    .label(*label)
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                    });
            }
            chart
                .configure_series_labels()
                .label_font((FONT, 13))
                .background_style(WHITE.mix(0.85))
                .border_style(RGBColor(160, 160, 160))
                .draw()
                .map_err(text)?;
        }
        Ok(())
    })
}

/// The confusion matrix (`matrix[true][predicted]`) as a heat map: cell shade = the row-normalised
/// rate, cell text = the count.
pub fn confusion_png(path: &Path, matrix: &[Vec<u64>], classes: &[String]) -> Result<()> {
    let k = matrix.len();
    if k == 0 || classes.len() != k {
        return Err(plot_error(
            path,
            format!("{} classes for a {k}x{k} matrix", classes.len()),
        ));
    }
    let side = (120 + 60 * k as u32).clamp(360, 1400);
    render(path, (side + 120, side), |root| {
        let text = |e: DrawingAreaErrorKind<_>| e.to_string();
        let mut chart = ChartBuilder::on(root)
            .caption(
                "confusion matrix (rows: true class, columns: predicted)",
                (FONT, 18),
            )
            .margin(12)
            .x_label_area_size(110)
            .y_label_area_size(110)
            .build_cartesian_2d((0..k).into_segmented(), (0..k).into_segmented())
            .map_err(text)?;
        let name = |v: &SegmentValue<usize>| match v {
            SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => {
                classes.get(*i).cloned().unwrap_or_default()
            }
            SegmentValue::Last => String::new(),
        };
        chart
            .configure_mesh()
            .disable_mesh()
            .x_labels(k)
            .y_labels(k)
            .x_label_formatter(&name)
            .y_label_formatter(&name)
            .label_style((FONT, 12))
            .draw()
            .map_err(text)?;
        for (t, row) in matrix.iter().enumerate() {
            let total: u64 = row.iter().sum();
            for (p, &count) in row.iter().enumerate() {
                let rate = if total > 0 {
                    count as f64 / total as f64
                } else {
                    0.0
                };
                let shade = (255.0 * (1.0 - rate)) as u8;
                // Rows are drawn top to bottom: true class t at y = k-1-t.
                let y = k - 1 - t;
                chart
                    .draw_series(std::iter::once(Rectangle::new(
                        [
                            (SegmentValue::Exact(p), SegmentValue::Exact(y)),
                            (SegmentValue::Exact(p + 1), SegmentValue::Exact(y + 1)),
                        ],
                        RGBColor(shade, shade, 255).filled(),
                    )))
                    .map_err(text)?;
                let ink = if rate > 0.5 { WHITE } else { BLACK };
                chart
                    .draw_series(std::iter::once(Text::new(
                        count.to_string(),
                        (SegmentValue::CenterOf(p), SegmentValue::CenterOf(y)),
                        (FONT, 14).into_font().color(&ink),
                    )))
                    .map_err(text)?;
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_png(path: &Path) -> bool {
        std::fs::read(path)
            .is_ok_and(|b| b.starts_with(&[0x89, b'P', b'N', b'G']) && b.len() > 1000)
    }

    #[test]
    fn figures_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let steps = [0.0, 1.0, 2.0];
        let rho = [1.5, f64::NAN, 0.8];
        let loss = [2.0, 1.5, 1.2];
        let path = dir.path().join("curves.png");
        curves_png(
            &path,
            &steps,
            &[
                Panel {
                    title: "rho",
                    series: vec![("rho", &rho)],
                },
                Panel {
                    title: "loss",
                    series: vec![("task loss", &loss)],
                },
            ],
        )
        .unwrap();
        assert!(is_png(&path));
        let path = dir.path().join("confusion.png");
        confusion_png(&path, &[vec![3, 1], vec![0, 2]], &["a".into(), "b".into()]).unwrap();
        assert!(is_png(&path));
        assert!(confusion_png(&path, &[vec![1]], &[]).is_err());
    }
}
