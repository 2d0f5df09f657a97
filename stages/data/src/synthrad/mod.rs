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
}
