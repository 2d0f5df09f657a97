//! Tasks derived from the latent record: VQA questions with answers, and retrieval hard
//! negatives. (Classification is [`Study::label`].)

use std::fmt::Write;

use super::config::SynthConfig;
use super::report::{finding_noun, leak_chance};
use super::rng::{Rng, mix64};
use super::study::{FindingKind, Side, Study, View};

const STREAM_VQA: u64 = 0x7671_6131;

/// VQA-RAD-style question types; the index is the `qtype` code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuestionType {
    Presence,
    Position,
    Size,
    Count,
    Abnormal,
    View,
}

impl QuestionType {
    pub const ALL: [QuestionType; 6] = [
        QuestionType::Presence,
        QuestionType::Position,
        QuestionType::Size,
        QuestionType::Count,
        QuestionType::Abnormal,
        QuestionType::View,
    ];

    pub fn name(self) -> &'static str {
        match self {
            QuestionType::Presence => "presence",
            QuestionType::Position => "position",
            QuestionType::Size => "size",
            QuestionType::Count => "count",
            QuestionType::Abnormal => "abnormal",
            QuestionType::View => "view",
        }
    }
}

/// The answer vocabulary of SynthRad: the same in every domain, so heads transfer.
pub fn answer_vocabulary() -> Vec<String> {
    let fixed = [
        "yes", "no", "left", "right", "both", "small", "moderate", "large", "0", "1", "2", "3",
        "pa", "ap",
    ];
    fixed
        .iter()
        .copied()
        .chain(super::study::class_names().iter().map(String::as_str))
        .map(str::to_string)
        .collect()
}

/// One generated question. `answer` is a word of [`answer_vocabulary`].
#[derive(Debug, Clone, PartialEq)]
pub struct Question {
    pub text: String,
    pub answer: &'static str,
    pub closed: bool,
    pub qtype: QuestionType,
}

fn yes_no(value: bool) -> &'static str {
    if value { "yes" } else { "no" }
}

/// Appends `config.questions_per_image` questions about `study` to `out`.
pub fn write_questions(out: &mut Vec<Question>, study: &Study, config: &SynthConfig) {
    let mut rng = Rng::for_item(config.seed, STREAM_VQA ^ config.domain as u64, study.index);
    if config.label_free_text {
        for _ in 0..config.questions_per_image {
            out.push(label_free_question(&mut rng, study));
        }
        return;
    }
    let leak_p = leak_chance(config, study.split);
    let mimic = study.mimic_dialect;
    for _ in 0..config.questions_per_image {
        let sided: Vec<_> = study
            .findings
            .iter()
            .filter(|f| f.kind.has_side())
            .collect();
        let mut qtype = QuestionType::ALL[rng.below(QuestionType::ALL.len())];
        if qtype == QuestionType::Position && sided.is_empty() {
            qtype = QuestionType::Presence;
        }
        let leak = rng.chance(leak_p);
        let mut text = String::with_capacity(64);
        let (answer, closed) = match qtype {
            QuestionType::Presence => {
                // The train split skews towards "no" (a language prior); val/test are balanced.
                let want_no = rng.chance(if study.split == 0 {
                    config.answer_prior
                } else {
                    0.5
                });
                let present: Vec<FindingKind> = study.findings.iter().map(|f| f.kind).collect();
                let absent: Vec<FindingKind> = FindingKind::ALL
                    .iter()
                    .copied()
                    .filter(|k| !present.contains(k))
                    .collect();
                let pick_present = !want_no && !present.is_empty();
                let kind = if pick_present {
                    present[rng.below(present.len())]
                } else {
                    absent[rng.below(absent.len())]
                };
                let noun = finding_noun(kind, mimic);
                if leak {
                    let _ = write!(
                        text,
                        "{}history of {noun}. ",
                        if pick_present { "" } else { "no " }
                    );
                }
                let _ = write!(
                    text,
                    "is there {} {noun}?",
                    if noun.starts_with(['a', 'e', 'i', 'o', 'u']) {
                        "an"
                    } else {
                        "a"
                    }
                );
                (yes_no(pick_present), true)
            }
            QuestionType::Position => {
                let finding = sided[rng.below(sided.len())];
                let noun = finding_noun(finding.kind, mimic);
                let side = match finding.side {
                    Side::Right => "right",
                    Side::Left => "left",
                    _ => "both",
                };
                if leak {
                    let _ = write!(text, "known {side} sided {noun}. ");
                }
                let _ = write!(text, "which side is the {noun} on?");
                (side, false)
            }
            QuestionType::Size => {
                let heart = study.finding(FindingKind::Cardiomegaly).is_some();
                if study.findings.is_empty() || rng.chance(0.5) {
                    if leak {
                        text.push_str(if heart {
                            "known cardiomegaly. "
                        } else {
                            "prior normal heart size. "
                        });
                    }
                    text.push_str("is the heart enlarged?");
                    (yes_no(heart), true)
                } else {
                    let finding = study.findings[rng.below(study.findings.len())];
                    let noun = finding_noun(finding.kind, mimic);
                    if leak {
                        let _ = write!(text, "known {} {noun}. ", finding.size.name());
                    }
                    let _ = write!(text, "how large is the {noun}?");
                    (finding.size.name(), false)
                }
            }
            QuestionType::Count => {
                let count = study.finding(FindingKind::Nodule).map_or(0, |f| f.count);
                if leak {
                    let _ = write!(text, "known {count} nodules. ");
                }
                text.push_str("how many nodules are there?");
                (["0", "1", "2", "3"][count.min(3) as usize], false)
            }
            QuestionType::Abnormal => {
                let primary = study.findings.first().map_or("normal", |f| f.kind.name());
                if leak {
                    let _ = write!(
                        text,
                        "prior study showed {}. ",
                        study
                            .findings
                            .first()
                            .map_or("no abnormality", |f| finding_noun(f.kind, mimic))
                    );
                }
                if rng.chance(0.5) {
                    text.push_str("is this study normal?");
                    (yes_no(study.is_normal()), true)
                } else {
                    text.push_str("what is the main finding?");
                    (primary, false)
                }
            }
            QuestionType::View => {
                if leak {
                    text.push_str(if study.view == View::Ap {
                        "portable exam. "
                    } else {
                        "upright exam. "
                    });
                }
                if rng.chance(0.5) {
                    text.push_str("is this an ap view?");
                    (yes_no(study.view == View::Ap), true)
                } else {
                    text.push_str("what is the projection of this radiograph?");
                    (study.view.name(), false)
                }
            }
        };
        out.push(Question {
            text,
            answer,
            closed,
            qtype,
        });
    }
}

/// A question whose text is drawn without reading the findings (so it tells nothing about the
/// answer): no leak phrases, presence asked about a uniformly drawn kind, size only of the heart,
/// position (which presumes a finding) asked as presence. The answer still follows the study.
fn label_free_question(rng: &mut Rng, study: &Study) -> Question {
    let mimic = study.mimic_dialect;
    let (text, answer, closed, qtype) = match QuestionType::ALL[rng.below(QuestionType::ALL.len())]
    {
        QuestionType::Presence | QuestionType::Position => {
            let kind = FindingKind::ALL[rng.below(FindingKind::ALL.len())];
            let noun = finding_noun(kind, mimic);
            let article = if noun.starts_with(['a', 'e', 'i', 'o', 'u']) {
                "an"
            } else {
                "a"
            };
            (
                format!("is there {article} {noun}?"),
                yes_no(study.finding(kind).is_some()),
                true,
                QuestionType::Presence,
            )
        }
        QuestionType::Size => (
            "is the heart enlarged?".to_string(),
            yes_no(study.finding(FindingKind::Cardiomegaly).is_some()),
            true,
            QuestionType::Size,
        ),
        QuestionType::Count => {
            let count = study.finding(FindingKind::Nodule).map_or(0, |f| f.count);
            (
                "how many nodules are there?".to_string(),
                ["0", "1", "2", "3"][count.min(3) as usize],
                false,
                QuestionType::Count,
            )
        }
        QuestionType::Abnormal => {
            if rng.chance(0.5) {
                (
                    "is this study normal?".to_string(),
                    yes_no(study.is_normal()),
                    true,
                    QuestionType::Abnormal,
                )
            } else {
                (
                    "what is the main finding?".to_string(),
                    study.findings.first().map_or("normal", |f| f.kind.name()),
                    false,
                    QuestionType::Abnormal,
                )
            }
        }
        QuestionType::View => {
            if rng.chance(0.5) {
                (
                    "is this an ap view?".to_string(),
                    yes_no(study.view == View::Ap),
                    true,
                    QuestionType::View,
                )
            } else {
                (
                    "what is the projection of this radiograph?".to_string(),
                    study.view.name(),
                    false,
                    QuestionType::View,
                )
            }
        }
    };
    Question {
        text,
        answer,
        closed,
        qtype,
    }
}

/// What retrieval compares: the set of (finding, side) of a study, sorted by kind.
pub type Signature = Vec<(FindingKind, Side)>;

pub fn signature(study: &Study) -> Signature {
    study.findings.iter().map(|f| (f.kind, f.side)).collect()
}

/// A stable 64-bit hash of a signature (the artifact's `signature` tensor): equal exactly when
/// the signatures are equal, up to 64-bit collisions. Built from fixed codes and SplitMix64, so it
/// does not change across Rust versions or platforms.
pub fn signature_hash(signature: &Signature) -> u64 {
    signature
        .iter()
        .fold(mix64(signature.len() as u64), |hash, &(kind, side)| {
            mix64(hash ^ ((kind as u64) << 8 | side as u64))
        })
}

/// Whether two studies differ in exactly one finding (added or removed) or in the side of
/// exactly one shared finding: their texts are then hard negatives for each other.
pub fn is_hard_negative(a: &Signature, b: &Signature) -> bool {
    let only_a = a
        .iter()
        .filter(|(k, _)| !b.iter().any(|(kb, _)| kb == k))
        .count();
    let only_b = b
        .iter()
        .filter(|(k, _)| !a.iter().any(|(ka, _)| ka == k))
        .count();
    let side_changes = a
        .iter()
        .filter(|(k, s)| b.iter().any(|(kb, sb)| kb == k && sb != s))
        .count();
    (only_a + only_b == 1 && side_changes == 0) || (only_a + only_b == 0 && side_changes == 1)
}

/// For each `(image, signature)` in `items`, up to `cap` other images that are hard negatives,
/// in ascending order.
pub fn hard_negatives(items: &[(u32, Signature)], cap: usize) -> Vec<(u32, Vec<u32>)> {
    items
        .iter()
        .map(|(image, sig)| {
            let negatives = items
                .iter()
                .filter(|(other, other_sig)| other != image && is_hard_negative(sig, other_sig))
                .map(|(other, _)| *other)
                .take(cap)
                .collect();
            (*image, negatives)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::config::Domain;
    use super::super::study::sample_study;
    use super::*;

    #[test]
    fn answers_are_in_the_vocabulary_and_follow_the_record() {
        let config = SynthConfig::new(6, Domain::Source, 32);
        let vocabulary = answer_vocabulary();
        let mut questions = Vec::new();
        for i in 0..300 {
            let study = sample_study(&config, i);
            questions.clear();
            write_questions(&mut questions, &study, &config);
            assert_eq!(questions.len(), 3);
            for q in &questions {
                assert!(vocabulary.iter().any(|a| a == q.answer), "{q:?}");
                if q.text.ends_with("is this study normal?") {
                    assert_eq!(q.answer, yes_no(study.is_normal()));
                }
                if q.text.ends_with("how many nodules are there?") {
                    let count = study.finding(FindingKind::Nodule).map_or(0, |f| f.count);
                    assert_eq!(q.answer, count.to_string());
                }
            }
        }
    }

    #[test]
    fn the_answer_prior_skews_train_presence_answers_only() {
        let mut config = SynthConfig::new(6, Domain::Source, 32);
        config.answer_prior = 0.9;
        config.questions_per_image = 6;
        let (mut train, mut test) = ([0usize; 2], [0usize; 2]);
        let mut questions = Vec::new();
        for i in 0..3000 {
            let study = sample_study(&config, i);
            questions.clear();
            write_questions(&mut questions, &study, &config);
            for q in questions
                .iter()
                .filter(|q| q.qtype == QuestionType::Presence)
            {
                let bucket = if study.split == 0 {
                    &mut train
                } else {
                    &mut test
                };
                bucket[usize::from(q.answer == "yes")] += 1;
            }
        }
        let train_no = train[0] as f32 / (train[0] + train[1]) as f32;
        let test_no = test[0] as f32 / (test[0] + test[1]) as f32;
        // Train says "no" at least at the prior; test asks for "yes" half the time, which only
        // normal studies (no finding to ask about) turn into "no".
        assert!(train_no >= 0.9, "{train_no} {train:?} {test:?}");
        assert!(test_no < train_no - 0.05, "{test_no} vs {train_no}");
    }

    #[test]
    fn signature_hashes_are_equal_exactly_when_signatures_are() {
        use FindingKind::*;
        let signatures = [
            vec![],
            vec![(Effusion, Side::Right)],
            vec![(Effusion, Side::Left)],
            vec![(Mass, Side::Right)],
            vec![(Pneumothorax, Side::Right), (Effusion, Side::Right)],
            vec![(Pneumothorax, Side::Right), (Effusion, Side::Left)],
            vec![(Cardiomegaly, Side::Center)],
        ];
        for (i, a) in signatures.iter().enumerate() {
            for (j, b) in signatures.iter().enumerate() {
                assert_eq!(
                    signature_hash(a) == signature_hash(b),
                    i == j,
                    "{a:?} {b:?}"
                );
            }
        }
        // Pinned: a stored artifact's signatures must keep their meaning across builds.
        assert_eq!(signature_hash(&vec![]), mix64(0));
    }

    #[test]
    fn hard_negatives_differ_in_one_finding_or_one_side() {
        use FindingKind::*;
        let a = vec![(Effusion, Side::Right)];
        assert!(is_hard_negative(&a, &vec![(Effusion, Side::Left)]));
        assert!(is_hard_negative(&a, &vec![]));
        assert!(is_hard_negative(
            &a,
            &vec![(Pneumothorax, Side::Left), (Effusion, Side::Right)]
        ));
        assert!(!is_hard_negative(&a, &a));
        assert!(!is_hard_negative(&a, &vec![(Pneumothorax, Side::Left)]));
        assert!(!is_hard_negative(
            &a,
            &vec![(Pneumothorax, Side::Left), (Effusion, Side::Left)]
        ));
        let items = vec![
            (0, a.clone()),
            (1, vec![]),
            (2, a.clone()),
            (3, vec![(Effusion, Side::Left)]),
        ];
        assert_eq!(
            hard_negatives(&items, 10),
            vec![
                (0, vec![1, 3]),
                (1, vec![0, 2, 3]),
                (2, vec![1, 3]),
                (3, vec![0, 1, 2])
            ]
        );
        assert_eq!(
            hard_negatives(&items, 1),
            vec![(0, vec![1]), (1, vec![0]), (2, vec![1]), (3, vec![0])]
        );
    }
}
