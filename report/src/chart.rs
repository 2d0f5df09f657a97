//! Drawing one line chart (optionally with interval bands) to SVG text and PNG bytes.
//!
//! Text is laid out and, in PNGs, rasterised with ab_glyph from the embedded DejaVu Sans font,
//! so nothing depends on the fonts of the machine. SVGs name the family `sans-serif` and let the
//! viewer pick its own.

use std::path::Path;
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

use crate::error::ReportError;

/// Pixel size of every chart.
pub(crate) const SIZE: (u32, u32) = (900, 540);
const FONT: &str = "sans-serif";

/// What one chart shows, in data coordinates.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub lines: Vec<Line>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Line {
    pub label: String,
    /// Sorted by x for bands; drawn in this order.
    pub points: Vec<(f64, f64)>,
    /// `(x, low, high)` of a shaded interval band, same length as `points` when present.
    pub band: Option<Vec<(f64, f64, f64)>>,
    /// Marks each point with a dot (sweep points); off for dense curves.
    pub markers: bool,
}

/// Okabe–Ito colours: distinguishable with the common colour-vision deficiencies.
const PALETTE: [RGBColor; 8] = [
    RGBColor(0, 114, 178),
    RGBColor(230, 159, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(86, 180, 233),
    RGBColor(213, 94, 0),
    RGBColor(240, 228, 66),
    RGBColor(0, 0, 0),
];

/// Registers the embedded font once per process.
fn ensure_font(path: &Path) -> Result<(), ReportError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED
        .get_or_init(|| register_font(FONT, FontStyle::Normal, dejavu::sans::regular()).is_ok());
    if ok {
        Ok(())
    } else {
        Err(ReportError::Plot {
            path: path.to_path_buf(),
            message: "the embedded DejaVu Sans font could not be parsed".to_string(),
        })
    }
}

/// The chart as an SVG document.
pub(crate) fn to_svg(chart: &Chart, path: &Path) -> Result<String, ReportError> {
    ensure_font(path)?;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        draw(chart, &root).map_err(|message| plot_error(path, message))?;
        root.present()
            .map_err(|e| plot_error(path, e.to_string()))?;
    }
    Ok(svg)
}

/// The chart as PNG file bytes (8-bit RGB).
pub(crate) fn to_png(chart: &Chart, path: &Path) -> Result<Vec<u8>, ReportError> {
    ensure_font(path)?;
    let (width, height) = SIZE;
    let mut pixels = vec![0u8; width as usize * height as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, SIZE).into_drawing_area();
        draw(chart, &root).map_err(|message| plot_error(path, message))?;
        root.present()
            .map_err(|e| plot_error(path, e.to_string()))?;
    }
    let mut bytes = Vec::new();
    let mut encoder = png::Encoder::new(&mut bytes, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder
        .write_header()
        .map_err(|e| plot_error(path, e.to_string()))?;
    writer
        .write_image_data(&pixels)
        .map_err(|e| plot_error(path, e.to_string()))?;
    writer
        .finish()
        .map_err(|e| plot_error(path, e.to_string()))?;
    Ok(bytes)
}

fn plot_error(path: &Path, message: String) -> ReportError {
    ReportError::Plot {
        path: path.to_path_buf(),
        message,
    }
}

fn draw<DB: DrawingBackend>(chart: &Chart, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
    let text = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(text)?;
    let (x_range, y_range) = ranges(chart);
    let mut context = ChartBuilder::on(root)
        .caption(&chart.title, (FONT, 24))
        .margin(18)
        .x_label_area_size(52)
        .y_label_area_size(78)
        .build_cartesian_2d(x_range, y_range)
        .map_err(text)?;
    context
        .configure_mesh()
        .x_desc(chart.x_label.as_str())
        .y_desc(chart.y_label.as_str())
        .label_style((FONT, 15))
        .axis_desc_style((FONT, 17))
        .x_label_formatter(&|v| tick(*v))
        .y_label_formatter(&|v| tick(*v))
        .light_line_style(RGBColor(236, 236, 236))
        .bold_line_style(RGBColor(210, 210, 210))
        .draw()
        .map_err(text)?;
    for (index, line) in chart.lines.iter().enumerate() {
        let color = PALETTE[index % PALETTE.len()];
        if let Some(band) = &line.band {
            // Upper edge left to right, lower edge back: one closed polygon.
            let outline: Vec<(f64, f64)> = band
                .iter()
                .map(|&(x, _, high)| (x, high))
                .chain(band.iter().rev().map(|&(x, low, _)| (x, low)))
                .collect();
            context
                .draw_series(std::iter::once(Polygon::new(outline, color.mix(0.18))))
                .map_err(text)?;
        }
        let style = color.stroke_width(2);
        context
            .draw_series(LineSeries::new(line.points.iter().copied(), style))
            .map_err(text)?
            .label(line.label.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 22, y)], style));
        if line.markers {
            context
                .draw_series(
                    line.points
                        .iter()
                        .map(|&point| Circle::new(point, 4, color.filled())),
                )
                .map_err(text)?;
        }
    }
    if chart.lines.iter().any(|line| !line.label.is_empty()) {
        context
            .configure_series_labels()
            .label_font((FONT, 15))
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(160, 160, 160))
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(text)?;
    }
    Ok(())
}

/// Tick text: integers without `.0`, others with at most six decimals and no trailing zeros.
fn tick(value: f64) -> String {
    if value != 0.0 && value.abs() < 1e-4 {
        return format!("{value:.1e}");
    }
    let text = format!("{value:.6}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" {
        "0".to_string()
    } else {
        text.to_string()
    }
}

/// Data ranges with a margin, so points and bands never sit on the frame; a single value gets
/// a unit-free margin around it.
fn ranges(chart: &Chart) -> (std::ops::Range<f64>, std::ops::Range<f64>) {
    let xs = chart
        .lines
        .iter()
        .flat_map(|line| line.points.iter().map(|p| p.0));
    let ys = chart.lines.iter().flat_map(|line| {
        let band = line
            .band
            .iter()
            .flatten()
            .flat_map(|&(_, low, high)| [low, high]);
        line.points.iter().map(|p| p.1).chain(band)
    });
    (padded(xs, 0.03), padded(ys, 0.08))
}

fn padded(values: impl Iterator<Item = f64>, fraction: f64) -> std::ops::Range<f64> {
    let (low, high) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(low, high), v| {
        (low.min(v), high.max(v))
    });
    if low > high {
        return 0.0..1.0;
    }
    let span = high - low;
    let pad = if span > 0.0 {
        span * fraction
    } else {
        (low.abs() * 0.1).max(0.5)
    };
    (low - pad)..(high + pad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_short() {
        assert_eq!(tick(20.0), "20");
        assert_eq!(tick(0.30000000000000004), "0.3");
        assert_eq!(tick(-0.0000001), "-1.0e-7");
        assert_eq!(tick(-0.0), "0");
        assert_eq!(tick(1234.5), "1234.5");
    }

    #[test]
    fn ranges_cover_bands_and_pad_single_values() {
        let chart = Chart {
            title: String::new(),
            x_label: String::new(),
            y_label: String::new(),
            lines: vec![Line {
                label: String::new(),
                points: vec![(0.25, 0.5), (0.75, 0.6)],
                band: Some(vec![(0.25, 0.4, 0.6), (0.75, 0.55, 0.65)]),
                markers: true,
            }],
        };
        let (x, y) = ranges(&chart);
        assert!((x.start - 0.235).abs() < 1e-12 && (x.end - 0.765).abs() < 1e-12);
        assert!((y.start - 0.38).abs() < 1e-12 && (y.end - 0.67).abs() < 1e-12);
        assert_eq!(padded([2.0].into_iter(), 0.1), 1.5..2.5);
        assert_eq!(padded(std::iter::empty(), 0.1), 0.0..1.0);
    }
}
