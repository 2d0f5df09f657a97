//! How much of each finding kind the pixels carry at a configuration's image size.
//!
//! A probe study is rendered twice from one generator state, once with a single finding of the
//! kind and once without it: same body, same acquisition, same noise, so the difference is the
//! finding's own signal. A kind is *visible* when that signal changes, on average, at least
//! `min_visible_pixels` pixels by more than the noise sigma. Kinds below the threshold are folded
//! out of the label set (see [`VisibleKinds`]). The probes use a fixed seed and the source
//! domain's appearance, so the label set depends on the image size and the lesion knobs only,
//! never on the dataset's seed, domain or shift.

use super::config::{Domain, SynthConfig};
use super::render::render;
use super::rng::Rng;
use super::study::{Finding, FindingKind, Study, draw_anatomy, draw_finding, sample_study};

const PROBE_SEED: u64 = 0x7669_7369_626c_6531;
const STREAM_PROBE: u64 = 0x7072_6f62;
/// Probe studies per kind in the label rule.
pub const PROBES: usize = 32;
/// The reference noise sigma (the source domain's): the unit of "changes a pixel".
pub const NOISE_SIGMA: f32 = 0.03;

/// The measured signal of one finding kind.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KindVisibility {
    pub kind: FindingKind,
    /// Mean over probes of the number of pixels the finding changes by more than the noise sigma.
    pub visible_pixels: f32,
    /// Mean over probes of the largest change, in noise sigmas.
    pub peak_sigmas: f32,
}

/// The configuration the probes render with: the dataset's size and lesion knobs, the source
/// domain's appearance and a fixed seed.
pub fn probe_config(config: &SynthConfig) -> SynthConfig {
    let mut probe = SynthConfig::new(PROBE_SEED, Domain::Source, config.image_size);
    probe.image_snr = config.image_snr;
    probe.finding_patches = config.finding_patches;
    probe.patch = config.patch;
    probe
}

/// Probe `index` for `kind`: the same study without and with one finding of that kind.
pub fn probe_pair(probe: &SynthConfig, kind: FindingKind, index: u64) -> (Study, Study) {
    let mut rng = Rng::for_item(PROBE_SEED, STREAM_PROBE ^ kind as u64, index);
    let finding: Finding = draw_finding(&mut rng, kind);
    let mut without = sample_study(probe, index);
    without.findings.clear();
    without.anatomy = draw_anatomy(&mut rng.clone(), &[]);
    let mut with = without.clone();
    with.findings.push(finding);
    with.anatomy = draw_anatomy(&mut rng, &with.findings);
    (without, with)
}

/// Measures every kind over `probes` probe pairs.
pub fn measure(config: &SynthConfig, probes: usize) -> Vec<KindVisibility> {
    let probe = probe_config(config);
    let pixels = probe.image_size * probe.image_size;
    let (mut plain, mut marked) = (vec![0.0; pixels], vec![0.0; pixels]);
    FindingKind::ALL
        .iter()
        .map(|&kind| {
            let (mut visible, mut peak) = (0usize, 0.0f32);
            for index in 0..probes as u64 {
                let (without, with) = probe_pair(&probe, kind, index);
                render(&without, &probe, &mut plain);
                render(&with, &probe, &mut marked);
                let mut largest = 0.0f32;
                for (a, b) in plain.iter().zip(&marked) {
                    let change = (b - a).abs();
                    visible += usize::from(change > NOISE_SIGMA);
                    largest = largest.max(change);
                }
                peak += largest / NOISE_SIGMA;
            }
            let probes = probes.max(1) as f32;
            KindVisibility {
                kind,
                visible_pixels: visible as f32 / probes,
                peak_sigmas: peak / probes,
            }
        })
        .collect()
}

/// The finding kinds that the label set keeps, in priority order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VisibleKinds {
    kinds: Vec<FindingKind>,
}

impl VisibleKinds {
    /// Every kind (the rule switched off).
    pub fn all() -> VisibleKinds {
        VisibleKinds {
            kinds: FindingKind::ALL.to_vec(),
        }
    }

    /// The kinds whose measured `visible_pixels` reach `min_visible_pixels` at this config.
    pub fn measured(config: &SynthConfig, min_visible_pixels: f32) -> VisibleKinds {
        if min_visible_pixels <= 0.0 {
            return VisibleKinds::all();
        }
        VisibleKinds {
            kinds: measure(config, PROBES)
                .into_iter()
                .filter(|v| v.visible_pixels >= min_visible_pixels)
                .map(|v| v.kind)
                .collect(),
        }
    }

    pub fn kinds(&self) -> &[FindingKind] {
        &self.kinds
    }

    pub fn contains(&self, kind: FindingKind) -> bool {
        self.kinds.contains(&kind)
    }

    /// The class names: `normal`, then the visible kinds in priority order.
    pub fn class_names(&self) -> Vec<String> {
        std::iter::once("normal")
            .chain(self.kinds.iter().map(|k| k.name()))
            .map(str::to_string)
            .collect()
    }

    /// The class of a study: its first visible finding (0 = none visible, "normal").
    pub fn label(&self, study: &Study) -> u32 {
        study
            .findings
            .iter()
            .find_map(|f| self.kinds.iter().position(|&k| k == f.kind))
            .map_or(0, |p| p as u32 + 1)
    }

    /// The study's visible findings as a multi-hot row over `kinds()`.
    pub fn findings_row(&self, study: &Study) -> Vec<u8> {
        self.kinds
            .iter()
            .map(|&k| u8::from(study.finding(k).is_some()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_pair_differs_only_in_the_finding() {
        let probe = probe_config(&SynthConfig::new(1, Domain::Target, 32));
        for kind in FindingKind::ALL {
            let (without, with) = probe_pair(&probe, kind, 3);
            assert!(without.findings.is_empty());
            assert_eq!(with.findings.len(), 1);
            assert_eq!(with.findings[0].kind, kind);
            assert_eq!((with.acq, with.view), (without.acq, without.view));
            let anatomy_changes =
                kind == FindingKind::Emphysema || kind == FindingKind::Cardiomegaly;
            assert_eq!(with.anatomy != without.anatomy, anatomy_changes, "{kind:?}");
        }
    }

    #[test]
    fn visibility_grows_with_the_lesion_contrast_and_is_zero_without_it() {
        let mut config = SynthConfig::new(1, Domain::Source, 32);
        config.image_snr = 0.0;
        let flat = measure(&config, 4);
        // Without lesion contrast only the kinds that reshape the anatomy (or, pneumothorax,
        // erase the ribs) change pixels.
        for v in &flat {
            let shapes_anatomy = matches!(
                v.kind,
                FindingKind::Emphysema | FindingKind::Cardiomegaly | FindingKind::Pneumothorax
            );
            assert_eq!(v.visible_pixels > 0.0, shapes_anatomy, "{v:?}");
        }
        config.image_snr = 8.0;
        let strong = measure(&config, 4);
        config.image_snr = 2.0;
        let weak = measure(&config, 4);
        for (s, w) in strong.iter().zip(&weak) {
            if s.kind != FindingKind::Cardiomegaly {
                assert!(s.visible_pixels > w.visible_pixels, "{s:?} {w:?}");
            }
        }
    }

    #[test]
    fn folded_kinds_leave_the_labels_and_the_findings_rows() {
        let config = SynthConfig::new(2, Domain::Source, 32);
        let all = VisibleKinds::all();
        let some = VisibleKinds {
            kinds: vec![FindingKind::Effusion, FindingKind::Nodule],
        };
        assert_eq!(all.class_names(), super::super::study::class_names());
        assert_eq!(some.class_names(), ["normal", "effusion", "nodule"]);
        let mut seen = [false; 3];
        for i in 0..2000 {
            let study = sample_study(&config, i);
            assert_eq!(all.label(&study), study.label());
            let label = some.label(&study);
            let row = some.findings_row(&study);
            assert_eq!(row.len(), 2);
            match label {
                0 => assert_eq!(row, [0, 0]),
                1 => assert_eq!(row[0], 1),
                _ => assert_eq!(row, [0, 1]),
            }
            seen[label as usize] = true;
        }
        assert_eq!(seen, [true; 3]);
        assert_eq!(VisibleKinds::measured(&config, 0.0), all);
    }
}
