//! Closed-form rendering of a study into a grey chest-radiograph-like image.
//!
//! Every pixel is evaluated from the study's shapes directly (soft-edged ellipses, segments,
//! smooth blobs); rotation is applied to the pixel coordinates, blur as edge softness, and noise
//! from a per-pixel hash, so there is no resampling pass and no scratch buffer.

use super::config::SynthConfig;
use super::rng::{gaussian_from_hash, mix64};
use super::study::{Device, Finding, FindingKind, Side, Study, Zone};

/// Lung geometry of one side, in normalised coordinates (x right, y down, both in [-1, 1]).
#[derive(Clone, Copy)]
struct Lung {
    cx: f32,
    cy: f32,
    ax: f32,
    ay: f32,
    /// Lowest point of the diaphragm dome under this lung.
    dome: f32,
    /// -1 for the patient's right (image left), +1 for the patient's left.
    lateral: f32,
}

/// A finding placed in the image: its side's lung and its resolved radius.
#[derive(Clone, Copy)]
struct Placed {
    finding: Finding,
    lung: Lung,
    /// Centre of the lesion (blob-like findings).
    x: f32,
    y: f32,
    radius: f32,
}

struct Segment {
    a: (f32, f32),
    b: (f32, f32),
}

/// Everything the per-pixel shader needs, derived once per study.
struct Scene<'a> {
    study: &'a Study,
    lungs: [Lung; 2],
    placed: [Option<Placed>; 8],
    segments: [Option<Segment>; 8],
    boxes: [Option<(f32, f32, f32, f32)>; 2],
    heart: (f32, f32, f32, f32),
    edge: f32,
    amplitude: f32,
    cos: f32,
    sin: f32,
}

fn zone_y(zone: Zone) -> f32 {
    match zone {
        Zone::Upper => -0.38,
        Zone::Mid => -0.08,
        Zone::Lower => 0.18,
    }
}

/// 1 inside, 0 outside, a linear ramp `edge` wide around the boundary (`d` is signed distance).
fn inside(d: f32, edge: f32) -> f32 {
    (0.5 - d / edge).clamp(0.0, 1.0)
}

/// Soft mask of an axis-aligned ellipse.
fn ellipse(x: f32, y: f32, cx: f32, cy: f32, ax: f32, ay: f32, edge: f32) -> f32 {
    let (ex, ey) = (x - cx, y - cy);
    // Farther than the half edge outside the bounding box means 0; tested with products only,
    // since most pixels are outside most shapes.
    let m = ax.min(ay);
    let outside = m + 0.5 * edge;
    if ex.abs() * m > ax * outside || ey.abs() * m > ay * outside {
        return 0.0;
    }
    let (dx, dy) = (ex / ax, ey / ay);
    let r = (dx * dx + dy * dy).sqrt();
    inside((r - 1.0) * m, edge)
}

/// Distance from a point to a segment; `f32::MAX` when clearly farther than `within`.
fn segment_distance_within(x: f32, y: f32, s: &Segment, within: f32) -> f32 {
    if x < s.a.0.min(s.b.0) - within
        || x > s.a.0.max(s.b.0) + within
        || y < s.a.1.min(s.b.1) - within
        || y > s.a.1.max(s.b.1) + within
    {
        return f32::MAX;
    }
    segment_distance(x, y, s)
}

fn segment_distance(x: f32, y: f32, s: &Segment) -> f32 {
    let (vx, vy) = (s.b.0 - s.a.0, s.b.1 - s.a.1);
    let (wx, wy) = (x - s.a.0, y - s.a.1);
    let t = ((wx * vx + wy * vy) / (vx * vx + vy * vy)).clamp(0.0, 1.0);
    let (px, py) = (s.a.0 + t * vx - x, s.a.1 + t * vy - y);
    (px * px + py * py).sqrt()
}

impl<'a> Scene<'a> {
    fn new(study: &'a Study, config: &SynthConfig) -> Scene<'a> {
        let size = config.image_size as f32;
        let anatomy = &study.anatomy;
        let pixel = 2.0 / size;
        let lung = |cx: f32, dome: f32, lateral: f32| Lung {
            cx,
            cy: -0.08,
            ax: 0.27 * anatomy.lung_width,
            ay: 0.58 * anatomy.lung_height,
            dome,
            lateral,
        };
        let lungs = [
            lung(-0.36, anatomy.diaphragm_right, -1.0),
            lung(0.38, anatomy.diaphragm_left, 1.0),
        ];

        let mut placed = [None; 8];
        let mut slot = 0;
        for finding in &study.findings {
            let sides: &[usize] = match finding.side {
                Side::Right => &[0],
                Side::Left => &[1],
                Side::Both => &[0, 1],
                Side::Center => &[],
            };
            let [lo, hi] = config.finding_patches;
            let diameter_patches = lo + (hi - lo) * finding.size.fraction();
            let radius = diameter_patches * config.patch as f32 / size;
            for &s in sides {
                let lung = lungs[s];
                let x = lung.cx + lung.lateral * finding.jitter.0 * 0.35 * lung.ax;
                let y = zone_y(finding.zone) + finding.jitter.1 * 0.06;
                if slot < placed.len() {
                    placed[slot] = Some(Placed {
                        finding: *finding,
                        lung,
                        x,
                        y,
                        radius,
                    });
                    slot += 1;
                }
            }
        }

        let mut segments: [Option<Segment>; 8] = Default::default();
        let mut boxes = [None; 2];
        let mut k = 0;
        let mut push = |segment: Segment| {
            if k < segments.len() {
                segments[k] = Some(segment);
                k += 1;
            }
        };
        for (d, device) in study.devices.iter().enumerate() {
            match device {
                Device::EtTube => push(Segment {
                    a: (0.0, -1.0),
                    b: (0.0, -0.5),
                }),
                Device::NgTube => {
                    push(Segment {
                        a: (0.03, -1.0),
                        b: (0.03, 0.35),
                    });
                    push(Segment {
                        a: (0.03, 0.35),
                        b: (0.22, 0.55),
                    });
                }
                Device::CentralLine => {
                    push(Segment {
                        a: (-0.6, -0.72),
                        b: (-0.12, -0.55),
                    });
                    push(Segment {
                        a: (-0.12, -0.55),
                        b: (-0.06, -0.18),
                    });
                }
                Device::Pacemaker => {
                    if d < boxes.len() {
                        boxes[d] = Some((0.52, -0.7, 0.09, 0.06));
                    }
                    push(Segment {
                        a: (0.48, -0.68),
                        b: (0.12, 0.22),
                    });
                }
                Device::ChestDrain => push(Segment {
                    a: (-0.88, 0.3),
                    b: (-0.45, -0.25),
                }),
            }
        }

        let thorax_half = 0.72 * anatomy.body_width;
        let heart = (
            0.06,
            0.27,
            anatomy.ctr * thorax_half * study.acq.heart_scale,
            0.22 * study.acq.heart_scale,
        );
        let angle = study.acq.rot_deg.to_radians();
        Scene {
            study,
            lungs,
            placed,
            segments,
            boxes,
            heart,
            edge: pixel * (1.0 + study.acq.blur_px),
            amplitude: 0.03 * config.image_snr,
            cos: angle.cos(),
            sin: angle.sin(),
        }
    }

    /// Soft mask of one lung: inside its ellipse and above its diaphragm dome.
    fn lung_mask(&self, lung: &Lung, x: f32, y: f32) -> (f32, f32) {
        let (ex, ey) = (x - lung.cx, y - lung.cy);
        let outside = lung.ax + 0.5 * self.edge;
        if ex.abs() > outside || ey.abs() * lung.ax > lung.ay * outside {
            return (0.0, outside / lung.ax);
        }
        let (dx, dy) = (ex / lung.ax, ey / lung.ay);
        let r = (dx * dx + dy * dy).sqrt();
        let dome_y = lung.dome - 0.12 * (1.0 - dx * dx).max(0.0);
        let mask = inside((r - 1.0) * lung.ax, self.edge) * inside(y - dome_y, self.edge);
        (mask, r)
    }

    fn shade(&self, x: f32, y: f32) -> f32 {
        let study = self.study;
        let a = self.amplitude;
        let anatomy = &study.anatomy;
        let mut v = 0.03;
        v += (0.42 - v) * ellipse(x, y, 0.0, 0.1, 0.88 * anatomy.body_width, 1.0, self.edge);

        let (right, r_right) = self.lung_mask(&self.lungs[0], x, y);
        let (left, r_left) = self.lung_mask(&self.lungs[1], x, y);
        let lung = right.max(left);

        let mut rib_weight = 1.0;
        let mut lung_shift = 0.0;

        for placed in self.placed.iter().flatten() {
            let lung_here = if placed.lung.lateral < 0.0 {
                right
            } else {
                left
            };
            let r_here = if placed.lung.lateral < 0.0 {
                r_right
            } else {
                r_left
            };
            let l = placed.lung;
            match placed.finding.kind {
                FindingKind::Effusion => {
                    let fill = [0.2, 0.32, 0.48][placed.finding.size as usize];
                    let lateral = ((x - l.cx) / l.ax * l.lateral).max(0.0);
                    let level = l.dome - fill * 2.0 * l.ay + 0.6 * fill * (1.0 - lateral);
                    lung_shift += a * 1.4 * lung_here * inside(level - y, self.edge * 2.0);
                }
                FindingKind::Pneumothorax => {
                    let width = [0.16, 0.26, 0.38][placed.finding.size as usize];
                    let upper = inside(y - l.cy, 0.2);
                    let rim = inside((1.0 - width) - r_here, 0.04);
                    let collapsed = lung_here * rim * upper;
                    lung_shift -= a * 0.6 * collapsed;
                    rib_weight -= collapsed;
                    let line = (r_here - (1.0 - width)) / 0.03;
                    lung_shift += a * 0.8 * (-line * line).exp() * upper * lung_here;
                }
                FindingKind::Opacity => {
                    let blob = ellipse(
                        x,
                        y,
                        placed.x,
                        placed.y,
                        placed.radius,
                        placed.radius * 0.85,
                        placed.radius * 0.6,
                    );
                    if blob > 0.0 {
                        let texture = 0.8 + 0.2 * ((x * 37.0).sin() * (y * 41.0).sin());
                        lung_shift += a * blob * texture * (0.3 + 0.7 * lung_here);
                    }
                }
                FindingKind::Atelectasis => {
                    let band = ellipse(
                        x,
                        y,
                        placed.x,
                        placed.y,
                        placed.radius * 1.6,
                        placed.radius * 0.45,
                        self.edge,
                    );
                    lung_shift += a * 0.9 * band * lung_here;
                }
                FindingKind::Nodule => {
                    for n in 0..placed.finding.count {
                        let offset = n as f32 * 0.22 - (placed.finding.count - 1) as f32 * 0.11;
                        let disk = ellipse(
                            x,
                            y,
                            placed.x,
                            placed.y + offset,
                            placed.radius * 0.55,
                            placed.radius * 0.55,
                            self.edge,
                        );
                        lung_shift += a * 1.2 * disk;
                    }
                }
                FindingKind::Mass => {
                    lung_shift += a
                        * 1.3
                        * ellipse(
                            x,
                            y,
                            placed.x,
                            placed.y,
                            placed.radius * 1.1,
                            placed.radius,
                            self.edge,
                        );
                }
                FindingKind::Edema => {
                    let hx = l.cx - l.lateral * 0.45 * l.ax;
                    let spread = 0.18 + 0.08 * placed.finding.size.fraction() * 2.0;
                    let (dx, dy) = ((x - hx) / spread, (y + 0.05) / (spread * 1.4));
                    lung_shift += a * 0.8 * (-(dx * dx + dy * dy)).exp() * lung_here;
                }
                FindingKind::Emphysema => {
                    lung_shift -= a * 0.4 * lung_here;
                }
                FindingKind::Fracture => {
                    let fx = l.cx + l.lateral * l.ax * 0.98;
                    let callus = ellipse(
                        x,
                        y,
                        fx,
                        placed.y,
                        0.06 + placed.radius * 0.3,
                        0.035,
                        self.edge,
                    );
                    v += a * callus;
                }
                FindingKind::Cardiomegaly => {}
            }
        }

        v -= 0.3 * lung;
        if lung > 0.0 {
            // A periodic bump (one rib per period) without a sine per pixel.
            let phase = 5.5 * (y + 0.35 * x * x) + anatomy.rib_phase;
            let offset = (phase - phase.floor() - 0.25) / 0.16;
            let ribs = (1.0 - offset * offset).max(0.0);
            v += 0.07 * ribs * lung * rib_weight.max(0.0);
        }
        v += lung_shift;

        let mediastinum = inside(
            (x.abs() - anatomy.mediastinum_width)
                .max(y - 0.25)
                .max(-0.95 - y),
            self.edge,
        );
        v += (0.6 - v) * mediastinum;
        let (hx, hy, hax, hay) = self.heart;
        v += (0.66 - v) * ellipse(x, y, hx, hy, hax, hay, self.edge);
        for side in [-1.0f32, 1.0] {
            let clavicle = Segment {
                a: (side * 0.12, -0.7),
                b: (side * 0.62, -0.8),
            };
            v += 0.12
                * inside(
                    segment_distance_within(x, y, &clavicle, 0.03 + self.edge) - 0.03,
                    self.edge,
                );
        }

        let line_width = self.edge * 0.6;
        for segment in self.segments.iter().flatten() {
            v += (0.95 - v)
                * 0.9
                * inside(
                    segment_distance_within(x, y, segment, line_width + self.edge) - line_width,
                    self.edge,
                );
        }
        for &(bx, by, bw, bh) in self.boxes.iter().flatten() {
            v += (0.95 - v) * inside(((x - bx).abs() - bw).max((y - by).abs() - bh), self.edge);
        }
        v
    }
}

/// `v^gamma` on [0, 1] by linear interpolation in a table: one `powf` per entry per study
/// instead of one per pixel. For SynthRad's gammas (0.55..1.05) the error is below 1e-3 for
/// v >= 0.02 and below 1.5e-2 under it (where v^gamma is steep), well under the noise (0.03).
struct GammaTable {
    values: [f32; GAMMA_STEPS + 1],
}

const GAMMA_STEPS: usize = 256;

impl GammaTable {
    fn new(gamma: f32) -> GammaTable {
        let mut values = [0.0; GAMMA_STEPS + 1];
        for (k, value) in values.iter_mut().enumerate() {
            *value = (k as f32 / GAMMA_STEPS as f32).powf(gamma);
        }
        GammaTable { values }
    }

    fn apply(&self, v: f32) -> f32 {
        let position = v.clamp(0.0, 1.0) * GAMMA_STEPS as f32;
        let k = (position as usize).min(GAMMA_STEPS - 1);
        let t = position - k as f32;
        self.values[k] + (self.values[k + 1] - self.values[k]) * t
    }
}

/// The target scanner's fixed pattern, the same in every image it takes: vertical grid lines
/// every [`GRID_PERIOD`] pixels and slow horizontal banding, each with mean zero over the image.
struct ScannerTexture {
    amplitude: f32,
    bands: Vec<f32>,
}

const GRID_PERIOD: usize = 4;
/// Full periods of the banding over the image height.
const BANDS: f32 = 3.0;

impl ScannerTexture {
    fn new(size: usize, amplitude: f32) -> ScannerTexture {
        let bands = if amplitude > 0.0 {
            (0..size)
                .map(|py| {
                    let turn = (py as f32 + 0.5) / size as f32 * BANDS;
                    0.5 * amplitude * (std::f32::consts::TAU * turn).sin()
                })
                .collect()
        } else {
            Vec::new()
        };
        ScannerTexture { amplitude, bands }
    }

    fn band(&self, py: usize) -> f32 {
        self.bands.get(py).copied().unwrap_or(0.0)
    }

    fn grid(&self, px: usize) -> f32 {
        if self.amplitude == 0.0 {
            0.0
        } else if px.is_multiple_of(GRID_PERIOD) {
            0.5 * self.amplitude
        } else {
            -0.5 * self.amplitude / (GRID_PERIOD - 1) as f32
        }
    }
}

/// Renders study `study` into `out` (image_size * image_size values in [0, 1]).
pub fn render(study: &Study, config: &SynthConfig, out: &mut [f32]) {
    let size = config.image_size;
    debug_assert_eq!(out.len(), size * size);
    let scene = Scene::new(study, config);
    let acq = &study.acq;
    let noise_key = mix64(config.seed ^ mix64(study.index ^ 0x6e6f_6973_6500_0000))
        ^ (config.domain as u64) << 63;
    let scale = 2.0 / size as f32;
    let gamma = GammaTable::new(acq.gamma);
    let texture = ScannerTexture::new(size, acq.texture);
    for py in 0..size {
        let v = (py as f32 + 0.5) * scale - 1.0;
        let band = texture.band(py);
        for px in 0..size {
            let u = (px as f32 + 0.5) * scale - 1.0;
            // Rotate the sampling point, which rotates the rendered anatomy the other way.
            let x = scene.cos * u - scene.sin * v;
            let y = scene.sin * u + scene.cos * v;
            let value = scene.shade(x, y);
            let value = ((value - 0.5) * acq.contrast + 0.5 + acq.offset).clamp(0.0, 1.0);
            let value = gamma.apply(value) + band + texture.grid(px);
            let pixel = (py * size + px) as u64;
            let noise = gaussian_from_hash(mix64(noise_key.wrapping_add(pixel)));
            out[py * size + px] = (value + acq.noise_sigma * noise).clamp(0.0, 1.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::config::Domain;
    use super::super::study::sample_study;
    use super::*;

    fn mean(values: &[f32]) -> f32 {
        values.iter().sum::<f32>() / values.len() as f32
    }

    #[test]
    fn images_are_in_range_and_depend_only_on_the_study() {
        let config = SynthConfig::new(11, Domain::Source, 32);
        let study = sample_study(&config, 2);
        let (mut a, mut b) = (vec![0.0; 32 * 32], vec![0.0; 32 * 32]);
        render(&study, &config, &mut a);
        render(&study, &config, &mut b);
        assert_eq!(a, b);
        assert!(a.iter().all(|v| (0.0..=1.0).contains(v)));
        render(&sample_study(&config, 3), &config, &mut b);
        assert_ne!(a, b);
    }

    #[test]
    fn the_gamma_table_is_close_to_powf() {
        for gamma in [0.55, 0.8, 1.0, 1.05] {
            let table = GammaTable::new(gamma);
            for k in 0..=1000 {
                let v = k as f32 / 1000.0;
                let bound = if v >= 0.02 { 1e-3 } else { 1.5e-2 };
                assert!(
                    (table.apply(v) - v.powf(gamma)).abs() < bound,
                    "{gamma} {v}"
                );
            }
        }
    }

    #[test]
    fn lungs_are_darker_than_the_heart() {
        let mut config = SynthConfig::new(1, Domain::Source, 64);
        config.image_snr = 0.0;
        let mut study = sample_study(&config, 0);
        study.findings.clear();
        study.devices.clear();
        let mut image = vec![0.0; 64 * 64];
        render(&study, &config, &mut image);
        let at = |x: f32, y: f32| {
            image[((y + 1.0) / 2.0 * 64.0) as usize * 64 + ((x + 1.0) / 2.0 * 64.0) as usize]
        };
        let right_lung = at(-0.4, -0.3);
        let heart = at(0.1, 0.3);
        assert!(heart > right_lung + 0.2, "heart {heart} lung {right_lung}");
    }

    #[test]
    fn an_effusion_brightens_its_lung_base_and_scales_with_snr() {
        let mut config = SynthConfig::new(1, Domain::Source, 64);
        let mut study = sample_study(&config, 0);
        study.findings.clear();
        study.devices.clear();
        study.acq.noise_sigma = 0.0;
        let mut normal = vec![0.0; 64 * 64];
        render(&study, &config, &mut normal);
        study.findings.push(Finding {
            kind: FindingKind::Effusion,
            side: Side::Right,
            zone: Zone::Lower,
            size: super::super::study::Size::Large,
            count: 1,
            jitter: (0.0, 0.0),
        });
        let mut effusion = vec![0.0; 64 * 64];
        render(&study, &config, &mut effusion);
        // Lower quarter of the image's left half (the patient's right base).
        let region = |img: &[f32]| -> f32 {
            let values: Vec<f32> = (38..46)
                .flat_map(|py| (8..28).map(move |px| (py, px)))
                .map(|(py, px)| img[py * 64 + px])
                .collect();
            mean(&values)
        };
        let other_side = |img: &[f32]| -> f32 {
            let values: Vec<f32> = (38..46)
                .flat_map(|py| (40..56).map(move |px| (py, px)))
                .map(|(py, px)| img[py * 64 + px])
                .collect();
            mean(&values)
        };
        let gain = region(&effusion) - region(&normal);
        assert!(gain > 0.1, "gain {gain}");
        assert!((other_side(&effusion) - other_side(&normal)).abs() < 1e-6);
        config.image_snr = 2.0;
        render(&study, &config, &mut effusion);
        let weak_gain = region(&effusion) - region(&normal);
        assert!(weak_gain < gain / 2.0, "{weak_gain} vs {gain}");
    }

    #[test]
    fn scanner_texture_is_a_zero_mean_fixed_pattern() {
        let texture = ScannerTexture::new(64, 0.04);
        let total: f32 = (0..64)
            .flat_map(|py| (0..64).map(move |px| (py, px)))
            .map(|(py, px)| texture.band(py) + texture.grid(px))
            .sum();
        assert!(total.abs() < 1e-3, "{total}");
        assert!(texture.grid(0) > 0.0 && texture.grid(1) < 0.0);
        let none = ScannerTexture::new(64, 0.0);
        assert_eq!((none.band(5), none.grid(0)), (0.0, 0.0));
    }

    #[test]
    fn shift_changes_appearance() {
        let mut config = SynthConfig::new(4, Domain::Target, 32);
        let mut stats = Vec::new();
        for shift in [0.0, 1.0] {
            config.shift_strength = shift;
            let mut total = 0.0;
            let mut image = vec![0.0; 32 * 32];
            for i in 0..50 {
                render(&sample_study(&config, i), &config, &mut image);
                total += mean(&image);
            }
            stats.push(total / 50.0);
        }
        assert!((stats[0] - stats[1]).abs() > 0.03, "{stats:?}");
    }
}
