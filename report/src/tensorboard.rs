//! TensorBoard event files: one folder per run holding one `events.out.tfevents.*` file, so that
//! `tensorboard --logdir DIR` lists every run by its folder name.
//!
//! The format is small enough to write directly: a sequence of TFRecords (little-endian u64
//! length, masked CRC-32C of the length, the data, masked CRC-32C of the data), each holding one
//! `tensorflow.Event` protobuf. The first event carries `file_version: "brain.Event:2"`; every
//! other one a step's `Summary`, one `simple_value` per tag (a 32-bit float, as TensorBoard
//! stores scalars), in step order.

use std::path::{Path, PathBuf};

use crate::error::ReportError;
use crate::tracked::TrackedRun;

/// What the first event of every file declares (TensorBoard's reader expects it).
const FILE_VERSION: &str = "brain.Event:2";
/// The name part after the time stamp, where TensorFlow writes the host name: fixed, so that the
/// export depends on the runs alone.
const FILE_SUFFIX: &str = "umdflow";

/// Writes `out/<run.dir_name>/events.out.tfevents.<finished seconds>.umdflow` for every run: its
/// final metrics at step 0 and its curves at their steps, all stamped with the run's finish
/// time. Event files already in those folders are replaced (a recomputed run must not show its
/// old curves beside the new ones); other files are left alone. Returns the files written.
pub fn write_tensorboard(runs: &[TrackedRun], out: &Path) -> Result<Vec<PathBuf>, ReportError> {
    crate::tracked::check_unique_dirs(runs)?;
    let mut written = Vec::with_capacity(runs.len());
    for run in runs {
        let dir = out.join(&run.dir_name);
        std::fs::create_dir_all(&dir).map_err(|e| ReportError::io(&dir, e))?;
        remove_event_files(&dir)?;
        let path = dir.join(format!(
            "events.out.tfevents.{}.{FILE_SUFFIX}",
            run.finished_at_ms / 1000
        ));
        std::fs::write(&path, event_file(run)).map_err(|e| ReportError::io(&path, e))?;
        written.push(path);
    }
    Ok(written)
}

fn remove_event_files(dir: &Path) -> Result<(), ReportError> {
    let entries = std::fs::read_dir(dir).map_err(|e| ReportError::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| ReportError::io(dir, e))?;
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with("events.out.tfevents.")
        {
            let path = entry.path();
            std::fs::remove_file(&path).map_err(|e| ReportError::io(&path, e))?;
        }
    }
    Ok(())
}

/// The whole event file of one run: one event per step, in step order, holding every value
/// logged at that step (the final metrics at step 0, then the curves), as a training loop writes
/// them: to TensorBoard's loaders a tag whose step goes backwards is a restarted run.
fn event_file(run: &TrackedRun) -> Vec<u8> {
    let wall_time = run.finished_at_ms as f64 / 1000.0;
    let mut values: Vec<(i64, &str, f64)> = run
        .metrics
        .iter()
        .map(|(name, value)| (0, name.as_str(), *value))
        .collect();
    for curve in &run.curves {
        values.extend(
            curve
                .points
                .iter()
                .map(|&(step, value)| (step, curve.name.as_str(), value)),
        );
    }
    // Stable: within a step, values keep the order above.
    values.sort_by_key(|&(step, _, _)| step);
    let mut file = Vec::new();
    append_record(&mut file, &file_version_event(wall_time));
    for same_step in values.chunk_by(|a, b| a.0 == b.0) {
        let scalars: Vec<(&str, f64)> = same_step.iter().map(|&(_, tag, v)| (tag, v)).collect();
        append_record(
            &mut file,
            &scalars_event(wall_time, same_step[0].0, &scalars),
        );
    }
    file
}

/// One TFRecord: length, its masked CRC, the data, the data's masked CRC.
fn append_record(out: &mut Vec<u8>, data: &[u8]) {
    let length = (data.len() as u64).to_le_bytes();
    out.extend_from_slice(&length);
    out.extend_from_slice(&masked_crc32c(&length).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc32c(data).to_le_bytes());
}

/// TFRecord's checksum: CRC-32C, rotated right by 15 bits, plus a constant (so that a CRC of data
/// that itself contains CRCs stays well distributed).
fn masked_crc32c(data: &[u8]) -> u32 {
    crc32c(data).rotate_right(15).wrapping_add(0xa282_ead8)
}

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), one table lookup per byte.
fn crc32c(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut crc = i as u32;
            let mut bit = 0;
            while bit < 8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0x82f6_3b78
                } else {
                    crc >> 1
                };
                bit += 1;
            }
            table[i] = crc;
            i += 1;
        }
        table
    };
    let mut crc = !0u32;
    for &byte in data {
        crc = TABLE[((crc ^ u32::from(byte)) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

// Field numbers of tensorflow/core/util/event.proto and framework/summary.proto.
const EVENT_WALL_TIME: u32 = 1; // double
const EVENT_STEP: u32 = 2; // int64
const EVENT_FILE_VERSION: u32 = 3; // string
const EVENT_SUMMARY: u32 = 5; // Summary
const SUMMARY_VALUE: u32 = 1; // repeated Summary.Value
const VALUE_TAG: u32 = 1; // string
const VALUE_SIMPLE_VALUE: u32 = 2; // float

// Protobuf wire types.
const VARINT: u32 = 0;
const FIXED64: u32 = 1;
const LENGTH_DELIMITED: u32 = 2;
const FIXED32: u32 = 5;

fn file_version_event(wall_time: f64) -> Vec<u8> {
    let mut event = Vec::new();
    put_key(&mut event, EVENT_WALL_TIME, FIXED64);
    event.extend_from_slice(&wall_time.to_le_bytes());
    put_bytes(&mut event, EVENT_FILE_VERSION, FILE_VERSION.as_bytes());
    event
}

fn scalars_event(wall_time: f64, step: i64, scalars: &[(&str, f64)]) -> Vec<u8> {
    let mut summary = Vec::new();
    for &(tag, value) in scalars {
        let mut summary_value = Vec::new();
        put_bytes(&mut summary_value, VALUE_TAG, tag.as_bytes());
        put_key(&mut summary_value, VALUE_SIMPLE_VALUE, FIXED32);
        summary_value.extend_from_slice(&(value as f32).to_le_bytes());
        put_bytes(&mut summary, SUMMARY_VALUE, &summary_value);
    }

    let mut event = Vec::new();
    put_key(&mut event, EVENT_WALL_TIME, FIXED64);
    event.extend_from_slice(&wall_time.to_le_bytes());
    put_key(&mut event, EVENT_STEP, VARINT);
    // int64 is encoded as its two's complement bit pattern (negative steps take ten bytes).
    put_varint(&mut event, step as u64);
    put_bytes(&mut event, EVENT_SUMMARY, &summary);
    event
}

fn put_key(out: &mut Vec<u8>, field: u32, wire_type: u32) {
    put_varint(out, u64::from(field << 3 | wire_type));
}

fn put_bytes(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_key(out, field, LENGTH_DELIMITED);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_standard_check_values() {
        // The CRC catalogue's check value for CRC-32C, and the crc32c crate's documented example.
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(crc32c(b"Hello world!"), 0x7b98_e751);
        assert_eq!(crc32c(b""), 0);
    }

    #[test]
    fn a_record_is_framed_with_masked_checksums() {
        let mut record = Vec::new();
        append_record(&mut record, b"abc");
        assert_eq!(record.len(), 8 + 4 + 3 + 4);
        assert_eq!(&record[..8], &3u64.to_le_bytes());
        let length_crc = u32::from_le_bytes(record[8..12].try_into().unwrap());
        let unmasked = length_crc.wrapping_sub(0xa282_ead8).rotate_left(15);
        assert_eq!(unmasked, crc32c(&3u64.to_le_bytes()));
        assert_eq!(&record[12..15], b"abc");
        let data_crc = u32::from_le_bytes(record[15..].try_into().unwrap());
        assert_eq!(data_crc, masked_crc32c(b"abc"));
    }

    /// The bytes below were produced by TensorBoard's own Python code
    /// (`tensorboard.summary.writer.record_writer.RecordWriter`, `event_pb2.Event`).
    #[test]
    fn records_and_events_match_tensorboards_own_encoding() {
        let mut record = Vec::new();
        append_record(&mut record, b"abc");
        assert_eq!(hex(&record), "0300000000000000b099490e6162636e57f121");

        let mut version = vec![9, 0, 0, 32, 64, 252, 84, 217, 65, 26, 13];
        version.extend_from_slice(b"brain.Event:2");
        assert_eq!(file_version_event(1_700_000_000.5), version);

        let mut scalar = vec![
            9, 0, 0, 32, 64, 252, 84, 217, 65, 16, 7, 42, 20, 10, 18, 10, 11,
        ];
        scalar.extend_from_slice(b"gmcoord/rho");
        scalar.extend_from_slice(&[21, 0, 0, 128, 62]);
        assert_eq!(
            scalars_event(1_700_000_000.5, 7, &[("gmcoord/rho", 0.25)]),
            scalar
        );
        assert_eq!(
            hex(&scalars_event(1.0, -1, &[("a", -2.0)])),
            "09000000000000f03f10ffffffffffffffffff012a0a0a080a016115000000c0"
        );
        assert_eq!(
            hex(&scalars_event(2.0, 3, &[("a", 1.0), ("bc", 0.5)])),
            "09000000000000004010032a150a080a0161150000803f0a090a026263150000003f"
        );
    }

    #[test]
    fn a_run_becomes_one_event_file_in_its_folder() {
        let dir = tempfile::tempdir().unwrap();
        let run = TrackedRun {
            name: "tune[seed=0]".into(),
            dir_name: "tune_seed_0_".into(),
            id: "0123456789abcdef0123456789abcdef".into(),
            tags: vec![],
            params: vec![],
            metrics: vec![("accuracy".into(), 0.5)],
            // Logged out of step order: the file must be in step order.
            curves: vec![crate::tracked::Curve {
                name: "gmcoord/rho".into(),
                points: vec![(1, 2.0), (0, 1.0)],
            }],
            artifacts: vec![],
            started_at_ms: 1_000,
            finished_at_ms: 1_700_000_000_500,
        };
        let stale = dir
            .path()
            .join("tune_seed_0_/events.out.tfevents.1.umdflow");
        std::fs::create_dir_all(stale.parent().unwrap()).unwrap();
        std::fs::write(&stale, b"old").unwrap();
        let written = write_tensorboard(&[run], dir.path()).unwrap();
        assert_eq!(
            written,
            [dir.path()
                .join("tune_seed_0_/events.out.tfevents.1700000000.umdflow")]
        );
        assert!(!stale.exists(), "a recomputed run's old events are gone");
        let bytes = std::fs::read(&written[0]).unwrap();
        // Walk the records: the version event, then one event per step.
        let mut offset = 0;
        let mut events = Vec::new();
        while offset < bytes.len() {
            let length = u64::from_le_bytes(bytes[offset..offset + 8].try_into().unwrap()) as usize;
            events.push(bytes[offset + 12..offset + 12 + length].to_vec());
            offset += 16 + length;
        }
        assert_eq!(offset, bytes.len());
        let wall_time = 1_700_000_000.5;
        assert_eq!(
            events,
            [
                file_version_event(wall_time),
                scalars_event(wall_time, 0, &[("accuracy", 0.5), ("gmcoord/rho", 1.0)]),
                scalars_event(wall_time, 1, &[("gmcoord/rho", 2.0)]),
            ]
        );
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn varints_follow_the_protobuf_encoding() {
        let encode = |value: u64| {
            let mut out = Vec::new();
            put_varint(&mut out, value);
            out
        };
        assert_eq!(encode(0), [0x00]);
        assert_eq!(encode(1), [0x01]);
        assert_eq!(encode(300), [0xac, 0x02]);
        assert_eq!(
            encode(-1i64 as u64),
            [0xff; 9].iter().copied().chain([0x01]).collect::<Vec<_>>()
        );
    }
}
