//! Collecting a real dataset for an ingest: read its records, then decode and resize one image
//! at a time (so memory holds the output, never all decoded full-size images).

use std::sync::atomic::{AtomicBool, Ordering};

use umdflow_stages::ProgressSink;

use super::collect::{Collected, CollectedQuestion, Vocabulary};
use super::params::IngestParams;
use crate::error::DataError;
use crate::imaging::{decode_any, resize_into};
use crate::readers::{self, ImageRef, ReadOptions};
use crate::synthrad::rng::Rng;

/// Stream id of the split draw for sources without their own split.
const STREAM_SPLIT: u64 = 0x7370_6c69;

pub fn collect(
    source: &str,
    path: &std::path::Path,
    params: &IngestParams,
    progress: &dyn ProgressSink,
    cancel: &AtomicBool,
) -> Result<Collected, DataError> {
    let options = ReadOptions {
        label: params.label.clone(),
        limit: params.limit,
    };
    let raw = readers::read(source, path, &options)?;
    let size = params.image_size();
    let (mut classes, mut answers, mut qtypes) = (
        Vocabulary::default(),
        Vocabulary::default(),
        Vocabulary::default(),
    );
    for record in &raw.records {
        classes.insert(&record.label);
        for q in &record.questions {
            answers.insert(&q.answer);
            qtypes.insert(&q.qtype);
        }
    }
    let mut out = Collected {
        licence: raw.licence.clone(),
        channels: 1,
        size,
        classes: classes.names(),
        answers: answers.names(),
        question_types: qtypes.names(),
        ..Collected::default()
    };
    out.images.reserve(raw.records.len() * size * size);
    progress.set_total(raw.records.len() as u64);
    for (index, record) in raw.records.iter().enumerate() {
        if cancel.load(Ordering::Relaxed) {
            return Err(DataError::Cancelled);
        }
        let decoded;
        let image = match &record.image {
            ImageRef::File(file) => {
                decoded = decode_any(file).map_err(|err| match err {
                    DataError::Io { path, source }
                        if source.kind() == std::io::ErrorKind::NotFound =>
                    {
                        DataError::record(path, record.id.clone(), "the image file is missing")
                    }
                    other => DataError::Invalid(format!("record {}: {other}", record.id)),
                })?;
                &decoded
            }
            ImageRef::Pixels(pixels) => pixels,
        };
        resize_into(image, size, &mut out.images);
        let split = record.split.unwrap_or_else(|| {
            let u = Rng::for_item(params.seed, STREAM_SPLIT, index as u64).uniform();
            let split = params.split.map(|x| x as f32);
            if u < split[0] {
                0
            } else if u < split[0] + split[1] {
                1
            } else {
                2
            }
        });
        let image_index = out.texts.len() as u32;
        for q in &record.questions {
            out.questions.push(CollectedQuestion {
                image: image_index,
                text: q.text.clone(),
                answer: answers.index_of(&q.answer).unwrap_or(0),
                closed: q.closed,
                qtype: qtypes.index_of(&q.qtype).unwrap_or(0).min(u8::MAX as u32) as u8,
            });
        }
        out.labels
            .push(classes.index_of(&record.label).unwrap_or(0));
        out.split.push(split);
        out.texts.push(record.text.clone());
        progress.set_position(index as u64 + 1);
    }
    if out.question_types.len() > u8::MAX as usize + 1 {
        return Err(DataError::format(
            path,
            format!(
                "{} question types do not fit the U8 `qtype` tensor",
                out.question_types.len()
            ),
        ));
    }
    Ok(out)
}
