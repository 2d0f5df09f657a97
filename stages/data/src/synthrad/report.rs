//! Report and caption text written from the latent study, in two dialects:
//! IU-like ("The heart is normal in size.") for the source domain and MIMIC-like
//! ("FINAL REPORT ... Heart size is normal.") with its own synonyms for the target domain.

use std::fmt::Write;

use super::config::SynthConfig;
use super::rng::Rng;
use super::study::{Device, Finding, FindingKind, History, Side, Size, Study, View};

/// Random stream ids for text decisions (separate from the study's own stream).
const STREAM_REPORT: u64 = 0x7265_706f;
const STREAM_CAPTION: u64 = 0x6361_7074;

fn side_word(side: Side) -> &'static str {
    match side {
        Side::Right => "right",
        Side::Left => "left",
        Side::Both => "bilateral",
        Side::Center => "",
    }
}

fn history_text(history: History) -> &'static str {
    match history {
        History::Cough => "cough",
        History::Fever => "fever",
        History::Dyspnea => "shortness of breath",
        History::ChestPain => "chest pain",
        History::Trauma => "trauma",
        History::Preoperative => "preoperative evaluation",
        History::FollowUp => "follow up",
    }
}

/// The noun of a finding in a dialect (MIMIC-like reports use target-only synonyms).
pub fn finding_noun(kind: FindingKind, mimic: bool) -> &'static str {
    match (kind, mimic) {
        (FindingKind::Pneumothorax, _) => "pneumothorax",
        (FindingKind::Mass, false) => "mass",
        (FindingKind::Mass, true) => "masslike lesion",
        (FindingKind::Effusion, false) => "pleural effusion",
        (FindingKind::Effusion, true) => "pleural fluid",
        (FindingKind::Cardiomegaly, false) => "cardiomegaly",
        (FindingKind::Cardiomegaly, true) => "enlarged cardiac silhouette",
        (FindingKind::Edema, false) => "pulmonary edema",
        (FindingKind::Edema, true) => "vascular congestion",
        (FindingKind::Opacity, false) => "opacity",
        (FindingKind::Opacity, true) => "airspace disease",
        (FindingKind::Atelectasis, false) => "atelectasis",
        (FindingKind::Atelectasis, true) => "collapse",
        (FindingKind::Nodule, _) => "nodule",
        (FindingKind::Emphysema, false) => "emphysema",
        (FindingKind::Emphysema, true) => "hyperinflation",
        (FindingKind::Fracture, false) => "rib fracture",
        (FindingKind::Fracture, true) => "fractured rib",
    }
}

fn size_word(size: Size, kind: FindingKind) -> &'static str {
    match (kind, size) {
        (FindingKind::Cardiomegaly, Size::Small) => "mild",
        (FindingKind::Cardiomegaly, Size::Moderate) => "moderate",
        (FindingKind::Cardiomegaly, Size::Large) => "marked",
        (_, size) => size.name(),
    }
}

/// A noun phrase such as "small right pleural effusion"; side and size each appear unless
/// `hide_side` / `hide_size` (the image-only attributes).
fn finding_phrase(
    out: &mut String,
    finding: &Finding,
    mimic: bool,
    hide_side: bool,
    hide_size: bool,
) {
    let plural = finding.kind == FindingKind::Nodule && finding.count > 1;
    if plural {
        let _ = write!(
            out,
            "{} ",
            ["", "one", "two", "three"][finding.count.min(3) as usize]
        );
    }
    if !hide_size {
        let _ = write!(out, "{} ", size_word(finding.size, finding.kind));
    }
    if !hide_side
        && finding.kind.has_side()
        && finding.kind != FindingKind::Edema
        && finding.kind != FindingKind::Emphysema
    {
        let _ = write!(out, "{} ", side_word(finding.side));
    }
    out.push_str(finding_noun(finding.kind, mimic));
    if plural {
        out.push('s');
    }
    if matches!(
        finding.kind,
        FindingKind::Opacity | FindingKind::Atelectasis | FindingKind::Nodule | FindingKind::Mass
    ) && !hide_side
    {
        let _ = write!(out, " in the {} zone", finding.zone.name());
    }
}

fn capitalise_from(out: &mut String, start: usize) {
    if let Some(first) = out[start..].chars().next() {
        let upper: String = first.to_uppercase().collect();
        out.replace_range(start..start + first.len_utf8(), &upper);
    }
}

fn device_sentence(device: Device, mimic: bool) -> &'static str {
    match (device, mimic) {
        (Device::EtTube, false) => "Endotracheal tube in place.",
        (Device::EtTube, true) => "ET tube terminates above the carina.",
        (Device::NgTube, false) => "Nasogastric tube courses below the diaphragm.",
        (Device::NgTube, true) => "Enteric tube tip is in the stomach.",
        (Device::CentralLine, false) => "Right central venous catheter in place.",
        (Device::CentralLine, true) => "Right IJ line tip in the SVC.",
        (Device::Pacemaker, false) => "Left chest wall pacemaker.",
        (Device::Pacemaker, true) => "Left pectoral pacer with leads in place.",
        (Device::ChestDrain, false) => "Right chest tube in place.",
        (Device::ChestDrain, true) => "Right pigtail catheter is seen.",
    }
}

/// Writes the sectioned report of `study` into `out` (cleared first); with `label_free_text`
/// only the header (view, indication, comparison), which is written without the findings.
pub fn write_report(out: &mut String, study: &Study, config: &SynthConfig) {
    out.clear();
    let mut rng = Rng::for_item(
        config.seed,
        STREAM_REPORT ^ config.domain as u64,
        study.index,
    );
    let mimic = study.mimic_dialect;
    let view = match study.view {
        View::Pa => "PA",
        View::Ap => "AP portable",
    };
    if mimic {
        let _ = write!(
            out,
            "FINAL REPORT EXAMINATION: Chest radiograph, {view} view. INDICATION: ___ year old {} with {}. COMPARISON: ___.",
            if study.female { "woman" } else { "man" },
            history_text(study.history)
        );
    } else {
        let _ = write!(
            out,
            "INDICATION: {}. COMPARISON: None.",
            history_text(study.history)
        );
        capitalise_from(out, "INDICATION: ".len());
    }
    if config.label_free_text {
        // The header says nothing about findings; everything after it does.
        return;
    }
    out.push_str(" FINDINGS: ");

    // Which facts the text states about each finding (side/size may stay image-only).
    let mut hidden = [(false, false); 4];
    for (k, _) in study.findings.iter().enumerate().take(hidden.len()) {
        hidden[k] = (
            rng.chance(config.image_only_attributes),
            rng.chance(config.image_only_attributes),
        );
    }

    if study.finding(FindingKind::Cardiomegaly).is_none() {
        out.push_str(if mimic {
            "Heart size is normal. "
        } else {
            "The heart is normal in size. "
        });
    }
    for (k, finding) in study.findings.iter().enumerate() {
        let (hide_side, hide_size) = hidden.get(k).copied().unwrap_or((false, false));
        let start = out.len();
        if mimic {
            finding_phrase(out, finding, mimic, hide_side, hide_size);
            out.push_str(
                if finding.kind == FindingKind::Nodule && finding.count > 1 {
                    " are seen. "
                } else {
                    " is seen. "
                },
            );
        } else {
            let plural = finding.kind == FindingKind::Nodule && finding.count > 1;
            out.push_str(if plural { "There are " } else { "There is " });
            let article = out.len();
            finding_phrase(out, finding, mimic, hide_side, hide_size);
            if !plural {
                let vowel = out[article..].starts_with(['a', 'e', 'i', 'o', 'u']);
                out.insert_str(article, if vowel { "an " } else { "a " });
            }
            out.push_str(". ");
        }
        capitalise_from(out, start);
    }
    let lung_finding = study
        .findings
        .iter()
        .any(|f| f.kind != FindingKind::Cardiomegaly && f.kind != FindingKind::Fracture);
    if !lung_finding {
        out.push_str(if mimic {
            "Lungs are clear. "
        } else {
            "The lungs are clear. "
        });
    }
    let pneumothorax = study.finding(FindingKind::Pneumothorax).is_some();
    let effusion = study.finding(FindingKind::Effusion).is_some();
    match (pneumothorax, effusion, mimic) {
        (false, false, false) => out.push_str("No pneumothorax or pleural effusion. "),
        (false, false, true) => out.push_str("No pleural effusion or pneumothorax is seen. "),
        (false, true, _) => out.push_str("No pneumothorax. "),
        (true, false, _) => out.push_str("No pleural effusion. "),
        (true, true, _) => {}
    }
    for &device in &study.devices {
        out.push_str(device_sentence(device, mimic));
        out.push(' ');
    }

    out.push_str("IMPRESSION: ");
    let start = out.len();
    let mut repeated = 0;
    for (k, finding) in study.findings.iter().enumerate() {
        if rng.chance(config.text_redundancy) {
            let (hide_side, hide_size) = hidden.get(k).copied().unwrap_or((false, false));
            let sentence = out.len();
            finding_phrase(out, finding, mimic, hide_side, hide_size);
            capitalise_from(out, sentence);
            out.push_str(". ");
            repeated += 1;
        }
    }
    if repeated == 0 {
        out.push_str(match (study.is_normal(), mimic) {
            (true, false) => "No acute cardiopulmonary abnormality.",
            (true, true) => "No acute cardiopulmonary process.",
            (false, false) => "Findings as above.",
            (false, true) => "As above.",
        });
    }
    capitalise_from(out, start);
    let trimmed = out.trim_end().len();
    out.truncate(trimmed);
}

/// The chance that a caption or question in this split carries a label-revealing phrase.
pub fn leak_chance(config: &SynthConfig, split: u8) -> f32 {
    if split == 0 {
        config.text_leak_train
    } else {
        config.text_leak_test
    }
}

/// A short MELINDA-like caption; names the primary finding only when the leak draw says so
/// (never with `label_free_text`).
pub fn write_caption(out: &mut String, study: &Study, config: &SynthConfig) {
    out.clear();
    let mut rng = Rng::for_item(
        config.seed,
        STREAM_CAPTION ^ config.domain as u64,
        study.index,
    );
    let view = match study.view {
        View::Pa => "PA",
        View::Ap => "AP",
    };
    let _ = write!(
        out,
        "{view} chest radiograph of a {}-year-old {} with {}",
        study.age,
        if study.female { "woman" } else { "man" },
        history_text(study.history)
    );
    if !config.label_free_text && rng.chance(leak_chance(config, study.split)) {
        match study.findings.first() {
            None => out.push_str(", showing no abnormality"),
            Some(finding) => {
                out.push_str(", showing ");
                finding_phrase(out, finding, study.mimic_dialect, false, false);
            }
        }
    }
    out.push('.');
}

#[cfg(test)]
mod tests {
    use super::super::config::Domain;
    use super::super::study::{Zone, sample_study};
    use super::*;

    fn study_with(finding: Option<Finding>, mimic: bool) -> (Study, SynthConfig) {
        let mut config = SynthConfig::new(2, Domain::Source, 32);
        config.image_only_attributes = 0.0;
        config.text_redundancy = 1.0;
        let mut study = sample_study(&config, 0);
        study.findings = finding.into_iter().collect();
        study.devices.clear();
        study.mimic_dialect = mimic;
        (study, config)
    }

    #[test]
    fn a_normal_iu_report_reads_like_one() {
        let (study, config) = study_with(None, false);
        let mut text = String::new();
        write_report(&mut text, &study, &config);
        assert!(text.starts_with("INDICATION: "), "{text}");
        assert!(text.contains("FINDINGS: The heart is normal in size. The lungs are clear. No pneumothorax or pleural effusion. IMPRESSION: No acute cardiopulmonary abnormality."), "{text}");
    }

    #[test]
    fn findings_carry_side_and_size_and_the_dialects_differ() {
        let effusion = Finding {
            kind: FindingKind::Effusion,
            side: Side::Right,
            zone: Zone::Lower,
            size: Size::Small,
            count: 1,
            jitter: (0.0, 0.0),
        };
        let (study, config) = study_with(Some(effusion), false);
        let mut iu = String::new();
        write_report(&mut iu, &study, &config);
        assert!(
            iu.contains("There is a small right pleural effusion. "),
            "{iu}"
        );
        assert!(
            iu.contains("IMPRESSION: Small right pleural effusion."),
            "{iu}"
        );
        let (study, config) = study_with(Some(effusion), true);
        let mut mimic = String::new();
        write_report(&mut mimic, &study, &config);
        assert!(mimic.starts_with("FINAL REPORT EXAMINATION: "), "{mimic}");
        assert!(
            mimic.contains("Small right pleural fluid is seen."),
            "{mimic}"
        );
    }

    #[test]
    fn several_nodules_are_counted_in_the_text() {
        let nodules = Finding {
            kind: FindingKind::Nodule,
            side: Side::Right,
            zone: Zone::Mid,
            size: Size::Small,
            count: 2,
            jitter: (0.0, 0.0),
        };
        let (study, config) = study_with(Some(nodules), false);
        let mut text = String::new();
        write_report(&mut text, &study, &config);
        assert!(
            text.contains("There are two small right nodules in the mid zone. "),
            "{text}"
        );
    }

    #[test]
    fn image_only_attributes_remove_side_and_size_from_the_text() {
        let nodule = Finding {
            kind: FindingKind::Nodule,
            side: Side::Left,
            zone: Zone::Upper,
            size: Size::Large,
            count: 1,
            jitter: (0.0, 0.0),
        };
        let (study, mut config) = study_with(Some(nodule), false);
        config.image_only_attributes = 1.0;
        let mut text = String::new();
        write_report(&mut text, &study, &config);
        assert!(text.contains("There is a nodule. "), "{text}");
        assert!(!text.contains("left") && !text.contains("large"), "{text}");
    }

    #[test]
    fn captions_leak_the_label_at_the_configured_rate() {
        let mut config = SynthConfig::new(8, Domain::Target, 32);
        config.text_leak_train = 1.0;
        config.text_leak_test = 0.0;
        let mut text = String::new();
        let (mut train, mut test) = (0, 0);
        for i in 0..200 {
            let study = sample_study(&config, i);
            write_caption(&mut text, &study, &config);
            let leaked = text.contains("showing");
            match study.split {
                0 => assert!(leaked, "{text}"),
                _ => assert!(!leaked, "{text}"),
            }
            if study.split == 0 {
                train += 1
            } else {
                test += 1
            }
        }
        assert!(train > 100 && test > 10);
    }
}
