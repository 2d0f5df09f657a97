//! Minimal PNG drawing (no fonts needed): loss-curve line plots and image grids.

use std::io::BufWriter;
use std::path::Path;

use crate::error::{ModelError, Result};

/// An RGB canvas.
pub struct Canvas {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<u8>,
}

impl Canvas {
    pub fn new(width: usize, height: usize, background: [u8; 3]) -> Self {
        Canvas {
            width,
            height,
            pixels: background
                .iter()
                .copied()
                .cycle()
                .take(width * height * 3)
                .collect(),
        }
    }

    pub fn set(&mut self, x: i64, y: i64, colour: [u8; 3]) {
        if x >= 0 && y >= 0 && (x as usize) < self.width && (y as usize) < self.height {
            let i = (y as usize * self.width + x as usize) * 3;
            self.pixels[i..i + 3].copy_from_slice(&colour);
        }
    }

    /// A straight line (Bresenham), two pixels thick.
    pub fn line(&mut self, (x0, y0): (i64, i64), (x1, y1): (i64, i64), colour: [u8; 3]) {
        let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
        let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
        let (mut x, mut y, mut err) = (x0, y0, dx + dy);
        loop {
            self.set(x, y, colour);
            self.set(x, y + 1, colour);
            if x == x1 && y == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }

    /// Pastes a `channels`×`size`×`size` image with values in [0, 1] at (x, y).
    pub fn paste(&mut self, image: &[f32], channels: usize, size: usize, x: usize, y: usize) {
        for row in 0..size {
            for col in 0..size {
                let value = |c: usize| {
                    (image[(c.min(channels - 1) * size + row) * size + col].clamp(0.0, 1.0) * 255.0)
                        .round() as u8
                };
                self.set(
                    (x + col) as i64,
                    (y + row) as i64,
                    [value(0), value(1), value(2)],
                );
            }
        }
    }

    pub fn save_png(&self, path: &Path) -> Result<()> {
        let fail = |message: String| ModelError::File {
            path: path.display().to_string(),
            message,
        };
        let file = std::fs::File::create(path).map_err(|e| fail(e.to_string()))?;
        let mut encoder =
            png::Encoder::new(BufWriter::new(file), self.width as u32, self.height as u32);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(|e| fail(e.to_string()))?;
        writer
            .write_image_data(&self.pixels)
            .map_err(|e| fail(e.to_string()))
    }
}

/// One curve of a plot.
pub struct Series<'a> {
    pub colour: [u8; 3],
    pub values: &'a [f32],
}

/// Draws curves over a shared x axis (index) and y axis (0 to the largest finite value), with a
/// frame and horizontal grid lines at quarters.
pub fn line_plot(series: &[Series<'_>], width: usize, height: usize) -> Canvas {
    let mut canvas = Canvas::new(width, height, [255, 255, 255]);
    let margin = 20i64;
    let (w, h) = (width as i64 - 2 * margin, height as i64 - 2 * margin);
    let grey = [200, 200, 200];
    for q in 0..=4 {
        let y = margin + h * q / 4;
        canvas.line((margin, y), (margin + w, y), grey);
    }
    canvas.line((margin, margin), (margin, margin + h), [0, 0, 0]);
    let y_max = series
        .iter()
        .flat_map(|s| s.values.iter())
        .copied()
        .filter(|v| v.is_finite())
        .fold(0f32, f32::max)
        .max(1e-12);
    let n = series
        .iter()
        .map(|s| s.values.len())
        .max()
        .unwrap_or(0)
        .max(2);
    for s in series {
        let point = |i: usize, v: f32| {
            (
                margin + (i as i64 * w) / (n as i64 - 1),
                margin + h - ((v.max(0.0) / y_max) * h as f32).round() as i64,
            )
        };
        for i in 1..s.values.len() {
            let (a, b) = (s.values[i - 1], s.values[i]);
            if a.is_finite() && b.is_finite() {
                canvas.line(point(i - 1, a), point(i, b), s.colour);
            }
        }
    }
    canvas
}
