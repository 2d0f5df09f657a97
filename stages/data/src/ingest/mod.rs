//! The `ingest` stage kind: reads a source (SynthRad or a real dataset on disk) and writes the
//! dataset artifact (see [`crate::artifact`]).

pub mod collect;
pub mod params;
pub mod real_source;
pub mod synth_source;

use std::path::{Path, PathBuf};

use umdflow_stages::{
    Params, Problem, ReadPath, StageContext, StageDecl, StageError, StageKind, params::typed,
};

use crate::artifact::{Counts, Dataset, Meta, PREVIEW_FILE, VqaSet, tokenizer_path};
use crate::error::DataError;
use crate::preview::write_preview;
use crate::tokenizer::TextTokenizer;
use collect::Collected;
use params::IngestParams;

/// The `ingest` stage kind.
pub struct IngestKind;

impl StageKind for IngestKind {
    fn name(&self) -> &'static str {
        "ingest"
    }

    /// It finds its inputs by kind and never sees stage names, so renaming reruns nothing.
    fn sees_names(&self) -> bool {
        false
    }

    /// A real dataset's folder and a given `tokenizer.json` are keyed by content, not by the path
    /// strings.
    fn reads(&self, params: &Params) -> Vec<ReadPath> {
        ["path", "tokenizer"]
            .into_iter()
            .filter_map(|param| {
                let path = params.get(param)?.as_str()?;
                Some(ReadPath {
                    param: param.into(),
                    path: path.into(),
                })
            })
            .collect()
    }

    fn version(&self) -> u32 {
        // 2: float knobs are keyed as the decimals written (0.9, not 0.8999999761581421).
        // 3: SynthRad artifacts carry each study's findings and finding signature; the classes
        // keep only kinds visible at the image size; shifted appearance adds scanner texture.
        3
    }

    fn summary(&self) -> &'static str {
        "reads SynthRad or a medical dataset into images, token ids, labels, VQA and a tokenizer"
    }

    fn default_params(&self) -> Result<Params, Vec<Problem>> {
        params::resolve(Params::new())
    }

    fn resolve_params(&self, decl: &StageDecl<'_>, params: Params) -> Result<Params, Vec<Problem>> {
        let ingest_inputs = decl
            .inputs
            .iter()
            .filter(|(_, kind)| kind == "ingest")
            .count();
        if ingest_inputs > 1 {
            return Err(vec![Problem::new(
                "inputs",
                "an ingest reuses the tokenizer of at most one ingest input",
            )]);
        }
        if ingest_inputs == 1 && params.get("tokenizer").is_some_and(|t| !t.is_null()) {
            return Err(vec![Problem::new(
                "params.tokenizer",
                "this ingest already reuses its ingest input's tokenizer; give one or the other",
            )]);
        }
        params::resolve(params)
    }

    fn run(&self, ctx: &StageContext<'_>) -> Result<(), StageError> {
        let params: IngestParams = typed(ctx.params)?;
        let shared_tokenizer = ctx
            .input_of_kind("ingest")
            .map(|input| tokenizer_path(&input.dir))
            .or_else(|| {
                params
                    .tokenizer
                    .as_deref()
                    .map(|path| resolve_path(ctx.work_dir, path))
            });
        ingest(&params, ctx, shared_tokenizer.as_deref()).map_err(|err| match err {
            DataError::Cancelled => StageError::Cancelled,
            other => StageError::Failed(other.to_string()),
        })
    }
}

fn ingest(
    params: &IngestParams,
    ctx: &StageContext<'_>,
    shared_tokenizer: Option<&Path>,
) -> Result<(), DataError> {
    ctx.progress
        .set_message(&format!("reading {}", params.source));
    let collected = if params.source == "synthrad" {
        let count = params
            .count
            .unwrap_or(params.preset.defaults().source_count);
        let count = params.limit.map_or(count, |limit| count.min(limit));
        synth_source::collect(
            &params.synth_config(),
            count,
            ctx.threads,
            ctx.progress,
            ctx.cancel,
        )?
    } else {
        let path = resolve_path(ctx.work_dir, params.path.as_deref().unwrap_or(""));
        real_source::collect(&params.source, &path, params, ctx.progress, ctx.cancel)?
    };
    if collected.is_empty() {
        return Err(DataError::Invalid(format!(
            "source `{}` produced no images",
            params.source
        )));
    }
    ctx.progress.set_message("tokenizing");
    let tokenizer = match shared_tokenizer {
        Some(path) => TextTokenizer::load(path)?,
        None => {
            let mut corpus: Vec<String> = collected.texts.clone();
            corpus.extend(collected.questions.iter().map(|q| q.text.clone()));
            TextTokenizer::train(&corpus, params.vocab_size())?
        }
    };
    let dataset = build_dataset(collected, &tokenizer, params)?;
    ctx.progress.set_message("writing");
    write_artifact(&dataset, &tokenizer, params.preview, ctx.out_dir)?;
    tracing::info!(
        source = %params.source,
        images = dataset.n,
        questions = dataset.meta.counts.questions,
        vocab_size = dataset.meta.vocab_size,
        "ingest wrote {}",
        ctx.out_dir.display()
    );
    Ok(())
}

/// Relative paths in params resolve against the folder of the pipeline file.
fn resolve_path(work_dir: &Path, path: &str) -> PathBuf {
    let path = Path::new(path);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        work_dir.join(path)
    }
}

/// Tokenizes the texts and questions and assembles the artifact in memory.
pub fn build_dataset(
    collected: Collected,
    tokenizer: &TextTokenizer,
    params: &IngestParams,
) -> Result<Dataset, DataError> {
    let max_len = params.max_len();
    let n = collected.len();
    let mut input_ids = Vec::with_capacity(n * max_len);
    let mut attention_mask = Vec::with_capacity(n * max_len);
    for text in &collected.texts {
        tokenizer.encode_row(text, max_len, &mut input_ids, &mut attention_mask)?;
    }
    let vqa = if collected.questions.is_empty() {
        None
    } else {
        let q = collected.questions.len();
        let mut set = VqaSet {
            image_index: Vec::with_capacity(q),
            input_ids: Vec::with_capacity(q * max_len),
            attention_mask: Vec::with_capacity(q * max_len),
            answer: Vec::with_capacity(q),
            closed: Vec::with_capacity(q),
            qtype: Vec::with_capacity(q),
        };
        for question in &collected.questions {
            set.image_index.push(question.image);
            tokenizer.encode_row(
                &question.text,
                max_len,
                &mut set.input_ids,
                &mut set.attention_mask,
            )?;
            set.answer.push(question.answer);
            set.closed.push(u8::from(question.closed));
            set.qtype.push(question.qtype);
        }
        Some(set)
    };
    let per_split = |code: u8| collected.split.iter().filter(|&&s| s == code).count();
    let mut class_counts = vec![0; collected.classes.len()];
    for &label in &collected.labels {
        if let Some(count) = class_counts.get_mut(label as usize) {
            *count += 1;
        }
    }
    let special = tokenizer.special();
    let meta = Meta {
        source: params.source.clone(),
        licence: collected.licence.clone(),
        domain: match params.domain {
            crate::synthrad::Domain::Source => "source".into(),
            crate::synthrad::Domain::Target => "target".into(),
        },
        image_size: collected.size,
        channels: collected.channels,
        max_len,
        counts: Counts {
            train: per_split(0),
            val: per_split(1),
            test: per_split(2),
            questions: collected.questions.len(),
        },
        class_counts,
        classes: collected.classes,
        answers: collected.answers,
        question_types: collected.question_types,
        findings: collected.finding_names,
        seed: params.seed,
        params: serde_json::to_value(params)
            .map_err(|err| DataError::Invalid(format!("internal: params: {err}")))?,
        vocab_size: tokenizer.vocab_size(),
        pad_id: special.pad,
        unk_id: special.unk,
        cls_id: special.cls,
        sep_id: special.sep,
        mask_id: special.mask,
    };
    Ok(Dataset {
        images: collected.images,
        n,
        channels: collected.channels,
        size: collected.size,
        input_ids,
        attention_mask,
        max_len,
        labels: collected.labels,
        split: collected.split,
        vqa,
        retrieval: collected.retrieval,
        findings: collected.findings,
        signatures: collected.signatures,
        meta,
    })
}

/// Writes the artifact files, the tokenizer and the preview sheet into `dir`.
pub fn write_artifact(
    dataset: &Dataset,
    tokenizer: &TextTokenizer,
    preview: usize,
    dir: &Path,
) -> Result<(), DataError> {
    dataset.save(dir)?;
    tokenizer.save(&tokenizer_path(dir))?;
    let shown = preview.min(dataset.n);
    let images: Vec<&[f32]> = (0..shown)
        .map(|i| &dataset.image(i)[..dataset.size * dataset.size])
        .collect();
    let texts = preview_texts(dataset, tokenizer, shown);
    let text_refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    write_preview(&dir.join(PREVIEW_FILE), &images, dataset.size, &text_refs)
}

/// What the preview shows beside each image: the decoded tokens (what the model sees), the
/// class name and the split.
fn preview_texts(dataset: &Dataset, tokenizer: &TextTokenizer, shown: usize) -> Vec<String> {
    (0..shown)
        .map(|i| {
            let ids: Vec<u32> = dataset
                .text_ids(i)
                .iter()
                .copied()
                .filter(|&id| id != dataset.meta.pad_id)
                .collect();
            let text = tokenizer.decode(&ids).unwrap_or_default();
            let class = dataset
                .meta
                .classes
                .get(dataset.labels[i] as usize)
                .map_or("?", String::as_str);
            let split = ["train", "val", "test"]
                .get(dataset.split[i] as usize)
                .copied()
                .unwrap_or("?");
            format!("({split}, {class}) {text}")
        })
        .collect()
}
