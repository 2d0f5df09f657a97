//! What the resume tests of every training kind share: stopping a run after a given step, comparing
//! outputs byte for byte, and unusable copies of a real checkpoint (`stages/tune/tests/resume.rs`
//! includes this file by its path).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use umdflow_stages::ProgressSink;

/// Sets the cancel flag once `at` steps are done (as Ctrl-C or Slurm's SIGTERM would), first
/// running `before_stop` (to take a copy of the checkpoint a kill would have left).
pub struct StopAt<'a> {
    pub at: u64,
    pub cancel: &'a AtomicBool,
    pub before_stop: &'a (dyn Fn() + Sync),
}

impl ProgressSink for StopAt<'_> {
    fn set_total(&self, _total: u64) {}
    fn set_position(&self, done: u64) {
        if done == self.at && !self.cancel.load(Ordering::SeqCst) {
            (self.before_stop)();
            self.cancel.store(true, Ordering::SeqCst);
        }
    }
    fn set_message(&self, _message: &str) {}
}

/// Each of `files` is byte-identical in `out` and in the uninterrupted run's `reference`.
pub fn assert_same_outputs(reference: &Path, out: &Path, files: &[&str], what: &str) {
    for file in files {
        let (a, b) = (
            std::fs::read(reference.join(file)).unwrap(),
            std::fs::read(out.join(file)).unwrap(),
        );
        assert!(
            a == b,
            "{what}: {file} differs from the uninterrupted run's"
        );
    }
}

/// Writes each of [`damaged_copies`] of `good` (written under `key`) to `checkpoint`, runs the
/// stage with `run(what, key)`, which returns its log (and checks its outputs), and checks that
/// the log says the checkpoint was ignored and why, and that nothing was resumed.
pub fn check_unusable_checkpoints(
    checkpoint: &Path,
    good: &[u8],
    key: &'static str,
    run: impl Fn(&'static str, &'static str) -> String,
) {
    for Damaged {
        what,
        bytes,
        key,
        why,
    } in damaged_copies(good, key)
    {
        std::fs::write(checkpoint, &bytes).unwrap();
        let log = run(what, key);
        assert!(
            log.contains("ignoring the checkpoint") && log.contains(&why),
            "{what}: {log}"
        );
        assert!(!log.contains("resumed from"), "{what}: {log}");
    }
}

/// One unusable checkpoint: what it is, its bytes, the key to resume with, and what the stage's
/// log must say about it.
pub struct Damaged {
    pub what: &'static str,
    pub bytes: Vec<u8>,
    pub key: &'static str,
    pub why: String,
}

/// Truncated, one bit flipped, not a checkpoint, and another key's, from `good`, a checkpoint
/// written under `key`.
pub fn damaged_copies(good: &[u8], key: &'static str) -> Vec<Damaged> {
    let mut flipped = good.to_vec();
    flipped[good.len() / 2] ^= 1;
    let hash = || "hash does not match".to_string();
    vec![
        Damaged {
            what: "truncated",
            bytes: good[..good.len() / 3].to_vec(),
            key,
            why: hash(),
        },
        Damaged {
            what: "one bit flipped",
            bytes: flipped,
            key,
            why: hash(),
        },
        Damaged {
            what: "not a checkpoint",
            bytes: b"hello".to_vec(),
            key,
            why: "not an umdflow training checkpoint".to_string(),
        },
        Damaged {
            what: "another key's",
            bytes: good.to_vec(),
            key: "k-other",
            why: format!("written with key {key}"),
        },
    ]
}
