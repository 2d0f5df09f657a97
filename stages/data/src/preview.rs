//! `preview.png`: a contact sheet of the first images with their texts beside them, drawn with
//! a built-in 3x5 pixel font so a user can see what went into an artifact.

use std::path::Path;

use crate::error::DataError;

const GLYPHS: &[(char, [&str; 5])] = &[
    ('a', [".#.", "#.#", "###", "#.#", "#.#"]),
    ('b', ["##.", "#.#", "##.", "#.#", "##."]),
    ('c', [".##", "#..", "#..", "#..", ".##"]),
    ('d', ["##.", "#.#", "#.#", "#.#", "##."]),
    ('e', ["###", "#..", "##.", "#..", "###"]),
    ('f', ["###", "#..", "##.", "#..", "#.."]),
    ('g', [".##", "#..", "#.#", "#.#", ".##"]),
    ('h', ["#.#", "#.#", "###", "#.#", "#.#"]),
    ('i', ["###", ".#.", ".#.", ".#.", "###"]),
    ('j', ["..#", "..#", "..#", "#.#", ".#."]),
    ('k', ["#.#", "#.#", "##.", "#.#", "#.#"]),
    ('l', ["#..", "#..", "#..", "#..", "###"]),
    ('m', ["#.#", "###", "###", "#.#", "#.#"]),
    ('n', ["##.", "#.#", "#.#", "#.#", "#.#"]),
    ('o', [".#.", "#.#", "#.#", "#.#", ".#."]),
    ('p', ["##.", "#.#", "##.", "#..", "#.."]),
    ('q', [".#.", "#.#", "#.#", "##.", ".##"]),
    ('r', ["##.", "#.#", "##.", "#.#", "#.#"]),
    ('s', [".##", "#..", ".#.", "..#", "##."]),
    ('t', ["###", ".#.", ".#.", ".#.", ".#."]),
    ('u', ["#.#", "#.#", "#.#", "#.#", "###"]),
    ('v', ["#.#", "#.#", "#.#", "#.#", ".#."]),
    ('w', ["#.#", "#.#", "###", "###", "#.#"]),
    ('x', ["#.#", "#.#", ".#.", "#.#", "#.#"]),
    ('y', ["#.#", "#.#", ".#.", ".#.", ".#."]),
    ('z', ["###", "..#", ".#.", "#..", "###"]),
    ('0', ["###", "#.#", "#.#", "#.#", "###"]),
    ('1', [".#.", "##.", ".#.", ".#.", "###"]),
    ('2', ["##.", "..#", ".#.", "#..", "###"]),
    ('3', ["##.", "..#", ".#.", "..#", "##."]),
    ('4', ["#.#", "#.#", "###", "..#", "..#"]),
    ('5', ["###", "#..", "##.", "..#", "##."]),
    ('6', [".##", "#..", "###", "#.#", "###"]),
    ('7', ["###", "..#", ".#.", ".#.", ".#."]),
    ('8', ["###", "#.#", "###", "#.#", "###"]),
    ('9', ["###", "#.#", "###", "..#", "##."]),
    ('.', ["...", "...", "...", "...", ".#."]),
    (',', ["...", "...", "...", ".#.", "#.."]),
    (':', ["...", ".#.", "...", ".#.", "..."]),
    ('?', ["##.", "..#", ".#.", "...", ".#."]),
    ('-', ["...", "...", "###", "...", "..."]),
    ('\'', [".#.", ".#.", "...", "...", "..."]),
    ('/', ["..#", "..#", ".#.", "#..", "#.."]),
    ('_', ["...", "...", "...", "...", "###"]),
    ('(', [".#.", "#..", "#..", "#..", ".#."]),
    (')', [".#.", "..#", "..#", "..#", ".#."]),
];

const THUMB: usize = 64;
const TEXT_COLUMNS: usize = 110;
const TEXT_LINES: usize = 10;
const CHAR_W: usize = 4;
const LINE_H: usize = 7;
const MARGIN: usize = 4;

fn glyph(c: char) -> Option<&'static [&'static str; 5]> {
    let lower = c.to_ascii_lowercase();
    GLYPHS
        .iter()
        .find(|(g, _)| *g == lower)
        .map(|(_, rows)| rows)
}

/// Breaks `text` into at most `TEXT_LINES` lines of `TEXT_COLUMNS` characters at spaces.
fn wrap(text: &str) -> Vec<String> {
    let mut lines = vec![String::new()];
    for word in text.split_whitespace() {
        let current = lines.last_mut().map_or(0, |l| l.len());
        if current > 0 && current + 1 + word.len() > TEXT_COLUMNS {
            if lines.len() == TEXT_LINES {
                break;
            }
            lines.push(String::new());
        }
        if let Some(line) = lines.last_mut() {
            if !line.is_empty() {
                line.push(' ');
            }
            line.extend(word.chars().take(TEXT_COLUMNS));
        }
    }
    lines
}

/// Writes the sheet: one row per image (grey, `size`x`size`, scaled to 64x64) with its text.
pub fn write_preview(
    path: &Path,
    images: &[&[f32]],
    size: usize,
    texts: &[&str],
) -> Result<(), DataError> {
    let rows = images.len().max(1);
    let width = MARGIN * 3 + THUMB + TEXT_COLUMNS * CHAR_W;
    let row_h = (THUMB).max(TEXT_LINES * LINE_H) + MARGIN;
    let height = MARGIN + rows * row_h;
    let mut canvas = vec![255u8; width * height];
    for (r, image) in images.iter().enumerate() {
        let top = MARGIN + r * row_h;
        for y in 0..THUMB {
            for x in 0..THUMB {
                let value = image[(y * size / THUMB) * size + x * size / THUMB];
                canvas[(top + y) * width + MARGIN + x] =
                    (value.clamp(0.0, 1.0) * 255.0).round() as u8;
            }
        }
        let text = texts.get(r).copied().unwrap_or("");
        for (l, line) in wrap(text).iter().enumerate() {
            for (k, c) in line.chars().enumerate() {
                let Some(rows) = glyph(c) else { continue };
                let left = MARGIN * 2 + THUMB + k * CHAR_W;
                for (gy, pattern) in rows.iter().enumerate() {
                    for (gx, bit) in pattern.bytes().enumerate() {
                        if bit == b'#' {
                            canvas[(top + l * LINE_H + gy) * width + left + gx] = 0;
                        }
                    }
                }
            }
        }
    }
    let buffer = image::GrayImage::from_raw(width as u32, height as u32, canvas)
        .ok_or_else(|| DataError::format(path, "internal: preview canvas has the wrong size"))?;
    buffer
        .save(path)
        .map_err(|err| DataError::format(path, format!("writing the preview: {err}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_glyph_is_three_by_five() {
        for (c, rows) in GLYPHS {
            assert!(
                rows.iter()
                    .all(|r| r.len() == 3 && r.bytes().all(|b| b == b'#' || b == b'.')),
                "{c}"
            );
        }
    }

    #[test]
    fn the_sheet_shows_images_and_text() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("preview.png");
        let image: Vec<f32> = (0..16).map(|k| k as f32 / 15.0).collect();
        write_preview(&path, &[&image, &image], 4, &["Small right effusion.", ""]).unwrap();
        let sheet = image::open(&path).unwrap().to_luma8();
        assert_eq!(
            sheet.width() as usize,
            MARGIN * 3 + THUMB + TEXT_COLUMNS * CHAR_W
        );
        // The first text row has dark pixels, the second (empty text) has none.
        let dark_in = |top: usize| {
            (top..top + LINE_H).any(|y| {
                (MARGIN * 2 + THUMB..sheet.width() as usize)
                    .any(|x| sheet.get_pixel(x as u32, y as u32)[0] == 0)
            })
        };
        assert!(dark_in(MARGIN));
        assert!(!dark_in(MARGIN + THUMB.max(TEXT_LINES * LINE_H) + MARGIN));
        assert_eq!(wrap(&"word ".repeat(200)).len(), TEXT_LINES);
    }
}
