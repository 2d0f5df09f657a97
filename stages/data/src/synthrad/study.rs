//! The latent study record: sampled first, and everything else (image, text, tasks) is
//! rendered from it.

use super::config::{Domain, SynthConfig};
use super::rng::Rng;

/// Finding kinds, in the priority order that picks a study's primary finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FindingKind {
    Pneumothorax,
    Mass,
    Effusion,
    Cardiomegaly,
    Edema,
    Opacity,
    Atelectasis,
    Nodule,
    Emphysema,
    Fracture,
}

impl FindingKind {
    pub const ALL: [FindingKind; 10] = [
        FindingKind::Pneumothorax,
        FindingKind::Mass,
        FindingKind::Effusion,
        FindingKind::Cardiomegaly,
        FindingKind::Edema,
        FindingKind::Opacity,
        FindingKind::Atelectasis,
        FindingKind::Nodule,
        FindingKind::Emphysema,
        FindingKind::Fracture,
    ];

    /// The class name (classification) and answer word.
    pub fn name(self) -> &'static str {
        match self {
            FindingKind::Pneumothorax => "pneumothorax",
            FindingKind::Mass => "mass",
            FindingKind::Effusion => "effusion",
            FindingKind::Cardiomegaly => "cardiomegaly",
            FindingKind::Edema => "edema",
            FindingKind::Opacity => "opacity",
            FindingKind::Atelectasis => "atelectasis",
            FindingKind::Nodule => "nodule",
            FindingKind::Emphysema => "emphysema",
            FindingKind::Fracture => "fracture",
        }
    }

    /// Prevalence in the source (ChestX-ray14-like) and target (CheXpert-like) populations,
    /// from the published label tables (data-sources.md §2.9).
    fn prevalence(self) -> (f32, f32) {
        match self {
            FindingKind::Effusion => (0.119, 0.386),
            FindingKind::Pneumothorax => (0.047, 0.087),
            FindingKind::Opacity => (0.177, 0.40),
            FindingKind::Nodule => (0.056, 0.05),
            FindingKind::Mass => (0.052, 0.04),
            FindingKind::Edema => (0.021, 0.234),
            FindingKind::Emphysema => (0.022, 0.03),
            FindingKind::Cardiomegaly => (0.025, 0.121),
            FindingKind::Atelectasis => (0.103, 0.149),
            FindingKind::Fracture => (0.02, 0.04),
        }
    }

    /// Which sides a finding of this kind can have.
    fn sides(self) -> &'static [Side] {
        match self {
            FindingKind::Effusion | FindingKind::Opacity | FindingKind::Atelectasis => {
                &[Side::Right, Side::Left, Side::Both]
            }
            FindingKind::Pneumothorax
            | FindingKind::Nodule
            | FindingKind::Mass
            | FindingKind::Fracture => &[Side::Right, Side::Left],
            FindingKind::Edema | FindingKind::Emphysema => &[Side::Both],
            FindingKind::Cardiomegaly => &[Side::Center],
        }
    }

    /// Whether the question "which side" makes sense.
    pub fn has_side(self) -> bool {
        self.sides() != [Side::Center]
    }
}

/// The patient's side (on a frontal radiograph the patient's right is the image's left).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Side {
    Right,
    Left,
    Both,
    Center,
}

impl Side {
    pub fn name(self) -> &'static str {
        match self {
            Side::Right => "right",
            Side::Left => "left",
            Side::Both => "both",
            Side::Center => "center",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Zone {
    Upper,
    Mid,
    Lower,
}

impl Zone {
    pub const ALL: [Zone; 3] = [Zone::Upper, Zone::Mid, Zone::Lower];

    pub fn name(self) -> &'static str {
        match self {
            Zone::Upper => "upper",
            Zone::Mid => "mid",
            Zone::Lower => "lower",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Size {
    Small,
    Moderate,
    Large,
}

impl Size {
    pub const ALL: [Size; 3] = [Size::Small, Size::Moderate, Size::Large];

    pub fn name(self) -> &'static str {
        match self {
            Size::Small => "small",
            Size::Moderate => "moderate",
            Size::Large => "large",
        }
    }

    /// 0, 0.5, 1: where the size sits in the `finding_patches` range.
    pub fn fraction(self) -> f32 {
        match self {
            Size::Small => 0.0,
            Size::Moderate => 0.5,
            Size::Large => 1.0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Finding {
    pub kind: FindingKind,
    pub side: Side,
    pub zone: Zone,
    pub size: Size,
    /// How many lesions (nodules: 1..=3; others 1).
    pub count: u8,
    /// Where in its zone the lesion sits, -1..1 (lateral offset) and -1..1 (vertical offset).
    pub jitter: (f32, f32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Device {
    EtTube,
    NgTube,
    CentralLine,
    Pacemaker,
    ChestDrain,
}

impl Device {
    pub const ALL: [Device; 5] = [
        Device::EtTube,
        Device::NgTube,
        Device::CentralLine,
        Device::Pacemaker,
        Device::ChestDrain,
    ];
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Pa,
    Ap,
}

impl View {
    pub fn name(self) -> &'static str {
        match self {
            View::Pa => "pa",
            View::Ap => "ap",
        }
    }
}

/// Acquisition: applied last to the rendered image.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Acquisition {
    pub gamma: f32,
    pub contrast: f32,
    pub offset: f32,
    pub noise_sigma: f32,
    /// Edge softness added on top of one pixel.
    pub blur_px: f32,
    pub rot_deg: f32,
    /// Amplitude of the target scanner's fixed pattern (grid lines and banding).
    pub texture: f32,
    /// Heart magnification (AP views magnify the heart).
    pub heart_scale: f32,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Anatomy {
    pub body_width: f32,
    pub lung_width: f32,
    pub lung_height: f32,
    /// Cardio-thoracic ratio.
    pub ctr: f32,
    pub diaphragm_right: f32,
    pub diaphragm_left: f32,
    pub rib_phase: f32,
    pub mediastinum_width: f32,
}

/// Text-only information: why the study was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum History {
    Cough,
    Fever,
    Dyspnea,
    ChestPain,
    Trauma,
    Preoperative,
    FollowUp,
}

impl History {
    pub const ALL: [History; 7] = [
        History::Cough,
        History::Fever,
        History::Dyspnea,
        History::ChestPain,
        History::Trauma,
        History::Preoperative,
        History::FollowUp,
    ];
}

#[derive(Debug, Clone, PartialEq)]
pub struct Study {
    pub index: u64,
    pub domain: Domain,
    /// 0 train, 1 val, 2 test.
    pub split: u8,
    pub view: View,
    pub female: bool,
    pub age: u8,
    pub acq: Acquisition,
    pub anatomy: Anatomy,
    /// Sorted by kind (so the first is the primary finding); at most one per kind.
    pub findings: Vec<Finding>,
    pub devices: Vec<Device>,
    pub history: History,
    /// Report dialect: false = IU-like, true = MIMIC-like.
    pub mimic_dialect: bool,
}

impl Study {
    /// The class index: 0 = normal, else 1 + the primary finding's place in `FindingKind::ALL`.
    pub fn label(&self) -> u32 {
        match self.findings.first() {
            None => 0,
            Some(f) => {
                1 + FindingKind::ALL
                    .iter()
                    .position(|&k| k == f.kind)
                    .unwrap_or(0) as u32
            }
        }
    }

    pub fn finding(&self, kind: FindingKind) -> Option<&Finding> {
        self.findings.iter().find(|f| f.kind == kind)
    }

    pub fn is_normal(&self) -> bool {
        self.findings.is_empty()
    }
}

/// The class names, indexed like [`Study::label`].
pub fn class_names() -> Vec<String> {
    std::iter::once("normal")
        .chain(FindingKind::ALL.iter().map(|k| k.name()))
        .map(str::to_string)
        .collect()
}

fn lerp(a: f32, b: f32, t: f32) -> f32 {
    a + (b - a) * t
}

/// Stream ids keep the source and target populations (and the split draw) independent.
const STREAM_SOURCE: u64 = 0x5352_4331;
const STREAM_TARGET: u64 = 0x5452_4731;
const MAX_FINDINGS: usize = 4;

/// Samples study `index`; depends only on `(config, index)`.
pub fn sample_study(config: &SynthConfig, index: u64) -> Study {
    let stream = match config.domain {
        Domain::Source => STREAM_SOURCE,
        Domain::Target => STREAM_TARGET,
    };
    let mut rng = Rng::for_item(config.seed, stream, index);
    let shift = config.effective_shift();

    let u = rng.uniform();
    let split = if u < config.split[0] {
        0
    } else if u < config.split[0] + config.split[1] {
        1
    } else {
        2
    };
    let view = if rng.chance(lerp(0.4, 0.846, shift)) {
        View::Ap
    } else {
        View::Pa
    };
    let female = rng.chance(0.45);
    let age = rng.range(18.0, 90.0) as u8;

    // Appearance draws take the same number of values whatever the shift, so the appearance
    // knob never changes which findings a study has.
    let look = config.effective_appearance();
    let acq = Acquisition {
        gamma: lerp(1.0, 0.6, look) * rng.range(0.95, 1.05),
        contrast: lerp(1.0, 0.7, look) * rng.range(0.95, 1.05),
        offset: rng.range(-0.02, 0.02) + 0.04 * look,
        noise_sigma: 0.03 * lerp(1.0, 2.0, look),
        blur_px: lerp(0.0, 1.0, look),
        rot_deg: rng.range(-1.0, 1.0) * lerp(1.0, 8.0, look),
        texture: 0.04 * look,
        heart_scale: if view == View::Ap {
            rng.range(1.10, 1.15)
        } else {
            1.0
        },
    };

    let mut findings = Vec::with_capacity(MAX_FINDINGS);
    for kind in FindingKind::ALL {
        let (source_p, target_p) = kind.prevalence();
        if rng.chance(lerp(source_p, target_p, shift)) && findings.len() < MAX_FINDINGS {
            findings.push(draw_finding(&mut rng, kind));
        }
    }
    let anatomy = draw_anatomy(&mut rng, &findings);

    let mut devices = Vec::new();
    if rng.chance(lerp(0.05, 0.52, shift)) {
        devices.push(Device::ALL[rng.below(Device::ALL.len())]);
        if rng.chance(0.3) {
            let second = Device::ALL[rng.below(Device::ALL.len())];
            if !devices.contains(&second) {
                devices.push(second);
            }
        }
    }
    let history = History::ALL[rng.below(History::ALL.len())];
    let mimic_dialect = rng.chance(shift);

    Study {
        index,
        domain: config.domain,
        split,
        view,
        female,
        age,
        acq,
        anatomy,
        findings,
        devices,
        history,
        mimic_dialect,
    }
}

/// Draws the side, zone, size, count and position of a finding of `kind`.
pub fn draw_finding(rng: &mut Rng, kind: FindingKind) -> Finding {
    let sides = kind.sides();
    let side = sides[rng.below(sides.len())];
    let zone = match kind {
        FindingKind::Effusion => Zone::Lower,
        FindingKind::Pneumothorax => Zone::Upper,
        FindingKind::Edema | FindingKind::Emphysema | FindingKind::Cardiomegaly => Zone::Mid,
        _ => Zone::ALL[rng.below(3)],
    };
    let size = Size::ALL[rng.weighted(&[0.45, 0.35, 0.2])];
    let count = if kind == FindingKind::Nodule {
        1 + rng.weighted(&[0.6, 0.25, 0.15]) as u8
    } else {
        1
    };
    Finding {
        kind,
        side,
        zone,
        size,
        count,
        jitter: (rng.range(-1.0, 1.0), rng.range(-1.0, 1.0)),
    }
}

/// Draws the anatomy, shaped by the findings that change it (emphysema, cardiomegaly). It takes
/// the same number of draws whatever the findings, so two calls from one generator state give
/// the same body with and without a finding.
pub fn draw_anatomy(rng: &mut Rng, findings: &[Finding]) -> Anatomy {
    let emphysema = findings.iter().any(|f| f.kind == FindingKind::Emphysema);
    let cardiomegaly = findings
        .iter()
        .find(|f| f.kind == FindingKind::Cardiomegaly)
        .map(|f| f.size);
    Anatomy {
        body_width: rng.range(0.9, 1.0),
        lung_width: rng.range(0.92, 1.05) * if emphysema { 1.1 } else { 1.0 },
        lung_height: rng.range(0.92, 1.05) * if emphysema { 1.12 } else { 1.0 },
        ctr: match cardiomegaly {
            None => rng.range(0.40, 0.47),
            Some(size) => 0.55 + 0.05 * size.fraction() * 2.0 + rng.range(0.0, 0.02),
        },
        diaphragm_right: rng.range(0.36, 0.42) + if emphysema { 0.1 } else { 0.0 },
        diaphragm_left: rng.range(0.42, 0.48) + if emphysema { 0.1 } else { 0.0 },
        rib_phase: rng.uniform(),
        mediastinum_width: rng.range(0.1, 0.14),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_study_depends_only_on_seed_and_index() {
        let config = SynthConfig::new(3, Domain::Source, 32);
        assert_eq!(sample_study(&config, 17), sample_study(&config, 17));
        let bigger = SynthConfig::new(3, Domain::Source, 128);
        assert_eq!(
            sample_study(&config, 17),
            sample_study(&bigger, 17),
            "presets must not change the studies"
        );
        assert_ne!(sample_study(&config, 17), sample_study(&config, 18));
    }

    #[test]
    fn shift_moves_priors_from_nih_like_to_chexpert_like() {
        let count = |shift: f32, test: &dyn Fn(&Study) -> bool| {
            let mut config = SynthConfig::new(5, Domain::Target, 32);
            config.shift_strength = shift;
            (0..4000)
                .filter(|&i| test(&sample_study(&config, i)))
                .count() as f32
                / 4000.0
        };
        let effusion = |s: &Study| s.finding(FindingKind::Effusion).is_some();
        let ap = |s: &Study| s.view == View::Ap;
        let normal = |s: &Study| s.is_normal();
        assert!((count(0.0, &effusion) - 0.119).abs() < 0.02);
        assert!((count(1.0, &effusion) - 0.386).abs() < 0.03);
        assert!((count(0.0, &ap) - 0.4).abs() < 0.03 && (count(1.0, &ap) - 0.846).abs() < 0.03);
        assert!(count(0.0, &normal) > 0.45 && count(1.0, &normal) < 0.2);
    }

    #[test]
    fn appearance_shift_keeps_every_study_and_changes_only_acquisition() {
        let mut config = SynthConfig::new(5, Domain::Target, 32);
        config.shift_strength = 0.3;
        let before: Vec<Study> = (0..500).map(|i| sample_study(&config, i)).collect();
        config.appearance_shift = 1.0;
        for (i, plain) in before.iter().enumerate() {
            let shifted = sample_study(&config, i as u64);
            assert_ne!(shifted.acq, plain.acq);
            let mut same = shifted.clone();
            same.acq = plain.acq;
            assert_eq!(&same, plain, "study {i} changed beyond its acquisition");
        }
        // The appearance follows the larger knob.
        assert_eq!(config.effective_appearance(), 1.0);
        config.appearance_shift = 0.1;
        assert_eq!(config.effective_appearance(), 0.3);
    }

    #[test]
    fn the_source_domain_ignores_shift() {
        let mut config = SynthConfig::new(1, Domain::Source, 32);
        let plain = sample_study(&config, 4);
        config.shift_strength = 1.0;
        config.appearance_shift = 1.0;
        assert_eq!(sample_study(&config, 4), plain);
    }
}
