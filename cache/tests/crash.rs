//! Crash tests in the manner of SQLite's and redb's: a child process commits a record and is
//! stopped (abort, as `kill -9` or a power cut would stop it, or panic) at every failpoint of the
//! commit path, at every hit; then the cache is opened again. It must open, hold either no new
//! record or a complete one, keep every earlier record intact, pass `verify`, and accept the same
//! commit again.

use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;

use umdflow_cache::{Cache, FAILPOINTS, Record};

/// Set in the child: the cache folder it commits into.
const CHILD_DIR: &str = "UMDFLOW_CRASH_TEST_CACHE";
const TEST_NAME: &str = "a_crash_at_any_failpoint_leaves_a_usable_cache";

fn record(key: &str) -> Record {
    Record {
        key: key.into(),
        pipeline: "p".into(),
        stage: "s".into(),
        instance: format!("s[{key}]"),
        components: serde_json::json!({}),
        input_digests: vec![],
        threads: Some(1),
        device: None,
        files: vec![],
        output_digest: String::new(),
        log: None,
        metrics: None,
        started_at_ms: 1,
        finished_at_ms: 2,
        duration_s: 0.0,
        umdflow_version: "test".into(),
    }
}

/// `base` is committed before the crash; `new` is the commit that crashes. `new` shares one file
/// with `base`, so the path that reuses an existing blob is crossed too.
const BASE: &[(&str, &str)] = &[("shared.txt", "shared content"), ("base.txt", "base only")];
const NEW: &[(&str, &str)] = &[
    ("shared.txt", "shared content"),
    ("a.txt", "new a"),
    ("dir/b.txt", "new b"),
];

fn commit(cache: &Cache, key: &str, files: &[(&str, &str)]) -> Record {
    let staging = cache.staging().unwrap();
    for (name, content) in files {
        let path = staging.out_dir().join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }
    fs::write(staging.log_path(), format!("log of {key}\n")).unwrap();
    cache.commit(staging, record(key)).unwrap()
}

/// The record is complete: every file present, intact and with the content that was committed.
fn assert_complete(cache: &Cache, key: &str, files: &[(&str, &str)], at: &str) {
    let found = cache.lookup(&[key]).unwrap();
    let found = found.get(key).unwrap_or_else(|| panic!("{at}: {key} lost"));
    assert!(cache.check(found).is_empty(), "{at}: {key} damaged");
    assert_eq!(found.record.files.len(), files.len(), "{at}");
    for (name, content) in files {
        let entry = found.record.files.iter().find(|e| e.path == *name).unwrap();
        let text = fs::read_to_string(cache.blob_path(&entry.hash)).unwrap();
        assert_eq!(&text, content, "{at}: {key}/{name}");
    }
}

fn run_child(dir: &Path, failpoint: &str) -> std::process::ExitStatus {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", TEST_NAME, "--nocapture", "--test-threads", "1"])
        .env(CHILD_DIR, dir)
        .env("UMDFLOW_FAILPOINT", failpoint)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap()
        .status
}

/// How many times a commit of `NEW` passes each failpoint: hashing once per file and log, the
/// later blob steps once per blob not already stored (all but `shared.txt`).
fn hits(point: &str) -> usize {
    match point {
        "blob:hashed" => NEW.len() + 1,
        _ if point.starts_with("blob:") => NEW.len(),
        _ => 1,
    }
}

#[test]
fn a_crash_at_any_failpoint_leaves_a_usable_cache() {
    if let Some(dir) = std::env::var_os(CHILD_DIR) {
        // The child: open (creating the index if it is new) and commit `new`, or, for the forget
        // step, verify a cache with a damaged blob; the armed failpoint stops it on the way.
        let cache = Cache::open(Path::new(&dir)).unwrap();
        if std::env::var("UMDFLOW_FAILPOINT").is_ok_and(|p| p.starts_with("index:forget")) {
            cache.verify().unwrap();
        } else {
            commit(&cache, "new", NEW);
        }
        return;
    }
    let mut cases = Vec::new();
    for point in FAILPOINTS {
        for nth in 1..=hits(point) {
            cases.push(format!("{point}@{nth}"));
        }
        cases.push(format!("{point}:panic"));
    }
    let mut crashed = 0;
    for case in &cases {
        let scratch = tempfile::tempdir().unwrap();
        let dir = scratch.path().join("cache");
        let creating = case.starts_with("index-create:");
        if !creating {
            let cache = Cache::open(&dir).unwrap();
            commit(&cache, "base", BASE);
        }
        let forgetting = case.starts_with("index:forget");
        if forgetting {
            damage_blob_of(&dir, "base", "base.txt");
        }
        let status = run_child(&dir, case);
        assert!(
            status.signal() == Some(libc_sigabrt()) || status.code() == Some(101),
            "{case}: the child must stop at the failpoint, got {status:?}"
        );
        crashed += 1;

        let cache = Cache::open(&dir).unwrap_or_else(|err| panic!("{case}: reopen: {err}"));
        if forgetting {
            // Either the forget committed, or `base` is still there and its damage is found again.
            if let Some(found) = cache.lookup(&["base"]).unwrap().get("base") {
                assert!(!cache.check(found).is_empty(), "{case}");
            }
            assert!(cache.lookup(&["base"]).unwrap().is_empty(), "{case}");
            commit(&cache, "base", BASE);
        }
        if !creating {
            assert_complete(&cache, "base", BASE, case);
        }
        if cache.lookup(&["new"]).unwrap().contains_key("new") {
            assert_complete(&cache, "new", NEW, case);
        }
        let report = cache.verify().unwrap();
        assert!(report.damaged.is_empty(), "{case}: {:?}", report.damaged);
        assert!(report.records_forgotten.is_empty(), "{case}");
        commit(&cache, "new", NEW);
        assert_complete(&cache, "new", NEW, case);
        cache.exclusive(|| {}).unwrap().gc(None, None).unwrap();
        assert!(cache.verify().unwrap().damaged.is_empty(), "{case}");
    }
    assert!(crashed >= 30, "only {crashed} crashes");
}

fn libc_sigabrt() -> i32 {
    6
}

/// Overwrites a file's blob with other bytes of the same size (what a disk error would do).
fn damage_blob_of(dir: &Path, key: &str, name: &str) {
    let cache = Cache::open(dir).unwrap();
    let found = cache.lookup(&[key]).unwrap();
    let entry = found[key]
        .record
        .files
        .iter()
        .find(|e| e.path == name)
        .unwrap();
    let blob = cache.blob_path(&entry.hash);
    let mut bytes = fs::read(&blob).unwrap();
    bytes[0] ^= 0x20;
    fs::remove_file(&blob).unwrap();
    fs::write(&blob, bytes).unwrap();
}
