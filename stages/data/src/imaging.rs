//! Decoding images (PNG/JPEG through `image`, DICOM through dicom-rs) to grey values in [0, 1],
//! and resizing them to the artifact's size.

use std::path::Path;

use dicom_pixeldata::{ConvertOptions, ModalityLutOption, PixelDecoder};

use crate::error::DataError;

/// A grey image with values in [0, 1], row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct GrayImage {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<f32>,
}

/// Decodes a PNG or JPEG file to grey.
pub fn decode_picture(path: &Path) -> Result<GrayImage, DataError> {
    let image = image::ImageReader::open(path)
        .map_err(DataError::io(path))?
        .with_guessed_format()
        .map_err(DataError::io(path))?
        .decode()
        .map_err(|err| DataError::format(path, format!("cannot decode the image: {err}")))?;
    let luma = image.to_luma32f();
    let (width, height) = (luma.width() as usize, luma.height() as usize);
    Ok(GrayImage {
        width,
        height,
        pixels: luma
            .into_raw()
            .into_iter()
            .map(|v| v.clamp(0.0, 1.0))
            .collect(),
    })
}

/// The pixel data of a DICOM file as stored (before the modality LUT), plus what is needed to
/// display it.
#[derive(Debug, Clone, PartialEq)]
pub struct DicomPixels {
    pub rows: usize,
    pub columns: usize,
    pub frames: usize,
    pub samples_per_pixel: usize,
    pub photometric: String,
    pub transfer_syntax: String,
    pub modality: Option<String>,
    /// Stored values, frame-major then row, column, sample.
    pub values: Vec<f32>,
}

/// Reads a DICOM file's stored pixel values (no rescale, no windowing).
pub fn read_dicom(path: &Path) -> Result<DicomPixels, DataError> {
    let object = dicom_object::open_file(path)
        .map_err(|err| DataError::format(path, format!("not a readable DICOM file: {err}")))?;
    let transfer_syntax = object
        .meta()
        .transfer_syntax()
        .trim_end_matches('\0')
        .to_string();
    let modality = object
        .element_by_name("Modality")
        .ok()
        .and_then(|element| element.to_str().ok())
        .map(|text| text.trim().to_string());
    let decoded = object.decode_pixel_data().map_err(|err| {
        DataError::format(
            path,
            format!("cannot decode the pixel data (transfer syntax {transfer_syntax}): {err}"),
        )
    })?;
    let options = ConvertOptions::new().with_modality_lut(ModalityLutOption::None);
    let values: Vec<f32> = decoded
        .to_vec_with_options(&options)
        .map_err(|err| DataError::format(path, format!("cannot convert the pixel data: {err}")))?;
    Ok(DicomPixels {
        rows: decoded.rows() as usize,
        columns: decoded.columns() as usize,
        frames: decoded.number_of_frames() as usize,
        samples_per_pixel: decoded.samples_per_pixel() as usize,
        photometric: decoded.photometric_interpretation().as_str().to_string(),
        transfer_syntax,
        modality,
        values,
    })
}

impl DicomPixels {
    /// The first frame as grey in [0, 1]: min-max scaled, colour averaged, MONOCHROME1 inverted
    /// (so bone is bright in every image).
    pub fn first_frame_gray(&self, path: &Path) -> Result<GrayImage, DataError> {
        let pixels_per_frame = self.rows * self.columns;
        let samples = self.samples_per_pixel.max(1);
        let frame = self
            .values
            .get(..pixels_per_frame * samples)
            .ok_or_else(|| {
                DataError::format(
                    path,
                    format!(
                        "pixel data has {} values, expected at least {}",
                        self.values.len(),
                        pixels_per_frame * samples
                    ),
                )
            })?;
        let gray: Vec<f32> = frame
            .chunks_exact(samples)
            .map(|s| s.iter().sum::<f32>() / samples as f32)
            .collect();
        let (lo, hi) = gray
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
                (lo.min(v), hi.max(v))
            });
        let range = if hi > lo { hi - lo } else { 1.0 };
        let invert = self.photometric == "MONOCHROME1";
        let pixels = gray
            .into_iter()
            .map(|v| {
                let unit = (v - lo) / range;
                if invert { 1.0 - unit } else { unit }
            })
            .collect();
        Ok(GrayImage {
            width: self.columns,
            height: self.rows,
            pixels,
        })
    }
}

/// True if the file starts like a DICOM Part 10 file (or is named `.dcm`).
pub fn is_dicom(path: &Path) -> bool {
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("dcm"))
    {
        return true;
    }
    let mut head = [0u8; 132];
    std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head))
        .is_ok_and(|()| &head[128..132] == b"DICM")
}

/// Decodes any supported image file to grey.
pub fn decode_any(path: &Path) -> Result<GrayImage, DataError> {
    if is_dicom(path) {
        read_dicom(path)?.first_frame_gray(path)
    } else {
        decode_picture(path)
    }
}

/// Resizes to `size`x`size` (area average when shrinking, bilinear when enlarging) and appends
/// the result to `out`. Non-square images are stretched, as the paper's pipelines do.
pub fn resize_into(image: &GrayImage, size: usize, out: &mut Vec<f32>) {
    let (w, h) = (image.width, image.height);
    if w == 0 || h == 0 {
        out.extend(std::iter::repeat_n(0.0, size * size));
        return;
    }
    let (sx, sy) = (w as f32 / size as f32, h as f32 / size as f32);
    for oy in 0..size {
        for ox in 0..size {
            let value = if sx > 1.0 || sy > 1.0 {
                let (x0, x1) = (
                    (ox as f32 * sx) as usize,
                    (((ox + 1) as f32 * sx).ceil() as usize).clamp(1, w),
                );
                let (y0, y1) = (
                    (oy as f32 * sy) as usize,
                    (((oy + 1) as f32 * sy).ceil() as usize).clamp(1, h),
                );
                let (x0, y0) = (x0.min(x1 - 1), y0.min(y1 - 1));
                let mut sum = 0.0;
                for y in y0..y1 {
                    sum += image.pixels[y * w + x0..y * w + x1].iter().sum::<f32>();
                }
                sum / ((x1 - x0) * (y1 - y0)) as f32
            } else {
                let fx = ((ox as f32 + 0.5) * sx - 0.5).clamp(0.0, (w - 1) as f32);
                let fy = ((oy as f32 + 0.5) * sy - 0.5).clamp(0.0, (h - 1) as f32);
                let (x0, y0) = (fx as usize, fy as usize);
                let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
                let (tx, ty) = (fx - x0 as f32, fy - y0 as f32);
                let p = |x: usize, y: usize| image.pixels[y * w + x];
                let top = p(x0, y0) * (1.0 - tx) + p(x1, y0) * tx;
                let bottom = p(x0, y1) * (1.0 - tx) + p(x1, y1) * tx;
                top * (1.0 - ty) + bottom * ty
            };
            out.push(value.clamp(0.0, 1.0));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shrinking_averages_areas_and_enlarging_interpolates() {
        let image = GrayImage {
            width: 4,
            height: 4,
            pixels: (0..16).map(|k| if k % 4 < 2 { 0.0 } else { 1.0 }).collect(),
        };
        let mut out = Vec::new();
        resize_into(&image, 2, &mut out);
        assert_eq!(out, vec![0.0, 1.0, 0.0, 1.0]);
        let small = GrayImage {
            width: 2,
            height: 1,
            pixels: vec![0.0, 1.0],
        };
        out.clear();
        resize_into(&small, 4, &mut out);
        assert_eq!(out.len(), 16);
        assert!(out[0] == 0.0 && out[3] == 1.0 && out[1] > 0.0 && out[1] < out[2]);
    }

    #[test]
    fn a_png_round_trips_to_grey() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.png");
        let buffer =
            image::GrayImage::from_fn(3, 2, |x, y| image::Luma([(x * 100 + y * 20) as u8]));
        buffer.save(&path).unwrap();
        let decoded = decode_any(&path).unwrap();
        assert_eq!((decoded.width, decoded.height), (3, 2));
        assert!((decoded.pixels[4] - 120.0 / 255.0).abs() < 1e-6);
    }

    #[test]
    fn an_unreadable_image_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broken.jpg");
        std::fs::write(&path, b"not an image").unwrap();
        let message = decode_any(&path).unwrap_err().to_string();
        assert!(message.contains("broken.jpg"), "{message}");
    }
}
