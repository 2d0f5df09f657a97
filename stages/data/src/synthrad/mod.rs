//! SynthRad: paired chest-radiograph-like images, sectioned reports, VQA questions, labels and
//! retrieval pairs, all generated from a latent study record in closed form.
//!
//! Study `i` depends only on `(seed, domain, i)`, so splits and contents are stable across
//! presets, study counts and thread counts. See `docs/data.md` for the design and the knobs.

pub mod config;
pub mod render;
pub mod report;
pub mod rng;
pub mod study;
pub mod tasks;
pub mod visibility;

pub use config::{Domain, Preset, PresetDefaults, SynthConfig, TextKind};
pub use study::{Study, class_names, sample_study};
pub use tasks::{Question, QuestionType, answer_vocabulary};

/// One generated study: the record, its paired text and its questions (the image goes into a
/// caller's buffer so that generation allocates little).
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    pub study: Study,
    pub text: String,
    pub questions: Vec<Question>,
}

/// Generates study `index`, rendering its image into `image` (image_size² values).
pub fn generate(config: &SynthConfig, index: u64, image: &mut [f32]) -> Generated {
    let study = sample_study(config, index);
    render::render(&study, config, image);
    let mut text = String::with_capacity(512);
    match config.text {
        TextKind::Report => report::write_report(&mut text, &study, config),
        TextKind::Caption => report::write_caption(&mut text, &study, config),
    }
    let mut questions = Vec::with_capacity(config.questions_per_image);
    tasks::write_questions(&mut questions, &study, config);
    Generated {
        study,
        text,
        questions,
    }
}

/// Generates studies `start..start + count` on `threads` threads, in index order; the result
/// does not depend on `threads`. Images are appended to `images`.
pub fn generate_range(
    config: &SynthConfig,
    start: u64,
    count: usize,
    threads: usize,
    images: &mut Vec<f32>,
) -> Vec<Generated> {
    let pixels = config.image_size * config.image_size;
    let base = images.len();
    images.resize(base + count * pixels, 0.0);
    let threads = threads.clamp(1, count.max(1));
    let per_thread = count.div_ceil(threads);
    let mut results: Vec<Vec<Generated>> = Vec::with_capacity(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = images[base..]
            .chunks_mut(per_thread * pixels)
            .enumerate()
            .map(|(t, chunk)| {
                scope.spawn(move || {
                    let first = start + (t * per_thread) as u64;
                    chunk
                        .chunks_mut(pixels)
                        .enumerate()
                        .map(|(k, image)| generate(config, first + k as u64, image))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for handle in handles {
            match handle.join() {
                Ok(part) => results.push(part),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
    });
    results.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_count_does_not_change_the_output() {
        let config = SynthConfig::new(21, Domain::Source, 32);
        let (mut one, mut three) = (Vec::new(), Vec::new());
        let a = generate_range(&config, 5, 17, 1, &mut one);
        let b = generate_range(&config, 5, 17, 3, &mut three);
        assert_eq!(a, b);
        assert_eq!(one, three);
        let mut image = vec![0.0; 32 * 32];
        let single = generate(&config, 12, &mut image);
        assert_eq!(single, a[7]);
        assert_eq!(&image[..], &one[7 * 1024..8 * 1024]);
    }

    /// The texts of one study (caption, report, question texts), written from `study`.
    fn texts_of(study: &Study, config: &SynthConfig) -> Vec<String> {
        let (mut caption, mut report) = (String::new(), String::new());
        report::write_caption(&mut caption, study, config);
        report::write_report(&mut report, study, config);
        let mut questions = Vec::new();
        tasks::write_questions(&mut questions, study, config);
        let mut texts = vec![caption, report];
        texts.extend(questions.into_iter().map(|q| q.text));
        texts
    }

    #[test]
    fn label_free_text_is_written_without_reading_the_findings() {
        for (domain, shift) in [(Domain::Source, 0.0), (Domain::Target, 1.0)] {
            let mut config = SynthConfig::new(13, domain, 32);
            config.shift_strength = shift;
            config.label_free_text = true;
            config.text_leak_train = 1.0;
            config.text_leak_test = 1.0;
            config.questions_per_image = 8;
            let studies: Vec<Study> = (0..400).map(|i| sample_study(&config, i)).collect();
            let mut seen_abnormal = false;
            for (i, study) in studies.iter().enumerate() {
                let texts = texts_of(study, &config);
                // Swapping in another study's findings changes no text.
                let mut other = study.clone();
                other.findings = studies[(i * 7 + 3) % studies.len()].findings.clone();
                seen_abnormal |= other.findings != study.findings;
                assert_eq!(texts_of(&other, &config), texts, "study {i}");
                // Captions and reports carry no finding word, side, size or normality phrase.
                for text in &texts[..2] {
                    let lower = text.to_lowercase();
                    for word in study::class_names()
                        .iter()
                        .map(String::as_str)
                        .chain(["effusion", "fluid", "left", "right", "bilateral", "small"])
                        .chain(["large", "no acute", "clear", "showing", "findings"])
                    {
                        assert!(!lower.contains(word), "`{word}` in {text}");
                    }
                }
            }
            assert!(seen_abnormal);
        }
    }

    #[test]
    fn without_label_free_text_the_texts_follow_the_findings() {
        let mut config = SynthConfig::new(13, Domain::Target, 32);
        config.text_leak_train = 1.0;
        let studies: Vec<Study> = (0..50).map(|i| sample_study(&config, i)).collect();
        let changed = (0..studies.len())
            .filter(|&i| {
                let mut other = studies[i].clone();
                other.findings = studies[(i + 1) % studies.len()].findings.clone();
                texts_of(&other, &config) != texts_of(&studies[i], &config)
            })
            .count();
        assert!(changed > 10, "{changed}");
    }
}
