use std::collections::BTreeSet;
use std::fs;
use std::io::{Seek, SeekFrom, Write};

use umdflow_cache::{Cache, Record};

fn record(key: &str) -> Record {
    Record {
        key: key.into(),
        pipeline: "p".into(),
        stage: "s".into(),
        instance: format!("s[{key}]"),
        components: serde_json::json!({"params": {"n": 1}}),
        input_digests: vec![],
        threads: Some(1),
        device: None,
        files: vec![],
        output_digest: String::new(),
        log: None,
        metrics: Some(serde_json::json!({"acc": 0.5})),
        started_at_ms: 1,
        finished_at_ms: 2,
        duration_s: 0.001,
        umdflow_version: "test".into(),
    }
}

fn commit(cache: &Cache, key: &str, files: &[(&str, &str)]) -> Record {
    let staging = cache.staging().unwrap();
    for (name, content) in files {
        let path = staging.out_dir().join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }
    fs::write(staging.log_path(), "log line\n").unwrap();
    cache.commit(staging, record(key)).unwrap()
}

#[test]
fn commit_then_lookup_and_materialize() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path()).unwrap();
    let committed = commit(&cache, "k1", &[("a.txt", "alpha"), ("sub/b.txt", "beta")]);
    assert_eq!(committed.files.len(), 2);
    assert_eq!(committed.files[1].path, "sub/b.txt");

    let found = cache.lookup(&["k1", "missing"]).unwrap();
    assert_eq!(found.len(), 1);
    let found = &found["k1"];
    assert_eq!(found.record, committed);
    assert!(cache.check(found).is_empty());

    let view = dir.path().join("view");
    cache.materialize(&found.record, &view).unwrap();
    assert_eq!(fs::read_to_string(view.join("sub/b.txt")).unwrap(), "beta");
    // Staging folders are gone after the commit.
    assert_eq!(fs::read_dir(dir.path().join("staging")).unwrap().count(), 0);
}

#[test]
fn identical_outputs_share_blobs_and_digest() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path()).unwrap();
    let a = commit(&cache, "k1", &[("x", "same")]);
    let b = commit(&cache, "k2", &[("x", "same")]);
    assert_eq!(a.output_digest, b.output_digest);
    let c = commit(&cache, "k3", &[("x", "other")]);
    assert_ne!(a.output_digest, c.output_digest);
}

#[test]
fn a_flipped_byte_is_detected_and_the_blob_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path()).unwrap();
    let committed = commit(&cache, "k1", &[("a.txt", "alpha")]);
    let blob = cache.blob_path(&committed.files[0].hash);
    let mut permissions = fs::metadata(&blob).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    permissions.set_readonly(false);
    fs::set_permissions(&blob, permissions).unwrap();
    let mut file = fs::OpenOptions::new().write(true).open(&blob).unwrap();
    file.seek(SeekFrom::Start(1)).unwrap();
    file.write_all(b"L").unwrap();
    drop(file);

    let found = cache.lookup(&["k1"]).unwrap();
    let damage = cache.check(&found["k1"]);
    assert_eq!(damage.len(), 1, "{damage:?}");
    assert!(
        damage[0].problem.contains("no longer matches"),
        "{}",
        damage[0]
    );
    assert!(!blob.exists(), "a damaged blob must never be used again");
}

#[test]
fn verify_finds_damage_and_forgets_its_records() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path()).unwrap();
    let committed = commit(&cache, "k1", &[("a.txt", "alpha")]);
    commit(&cache, "k2", &[("b.txt", "beta")]);
    let blob = cache.blob_path(&committed.files[0].hash);
    fs::remove_file(&blob).unwrap();
    fs::write(&blob, "alphA").unwrap();
    let report = cache.verify().unwrap();
    assert_eq!(report.damaged.len(), 1);
    assert_eq!(report.records_forgotten, vec!["s[k1]".to_string()]);
    assert!(cache.lookup(&["k1"]).unwrap().is_empty());
    assert_eq!(cache.lookup(&["k2"]).unwrap().len(), 1);
}

#[test]
fn gc_keeps_what_is_reached_and_frees_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path()).unwrap();
    commit(&cache, "keep", &[("a", "kept content")]);
    commit(&cache, "drop", &[("b", "dropped content")]);
    let keep: BTreeSet<String> = ["keep".to_string()].into();
    let report = cache
        .exclusive(|| {})
        .unwrap()
        .gc(Some(&keep), None)
        .unwrap();
    assert_eq!(report.records_removed, 1);
    // Both records wrote the same log, so only the dropped output blob goes.
    assert_eq!(report.blobs_removed, 1);
    assert!(report.bytes_freed >= "dropped content".len() as u64);
    let found = cache.lookup(&["keep"]).unwrap();
    assert!(cache.check(&found["keep"]).is_empty());
    // A second gc frees nothing.
    assert_eq!(
        cache
            .exclusive(|| {})
            .unwrap()
            .gc(Some(&keep), None)
            .unwrap()
            .bytes_freed,
        0
    );
}

#[test]
fn history_lists_earlier_records_of_a_stage() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path()).unwrap();
    commit(&cache, "k1", &[("a", "1")]);
    commit(&cache, "k2", &[("a", "2")]);
    let history = cache.history("p", "s").unwrap();
    let keys: Vec<&str> = history.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(keys, ["k1", "k2"]);
}

#[test]
fn two_handles_on_one_cache_interleave() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let path = path.clone();
            std::thread::spawn(move || {
                let cache = Cache::open(&path).unwrap();
                for i in 0..10 {
                    let key = format!("t{t}-{i}");
                    commit(&cache, &key, &[("f", &key)]);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let cache = Cache::open(&path).unwrap();
    assert_eq!(cache.all_records().unwrap().len(), 40);
}

/// Rewrites a blob in place with same-size bytes and restores its modification time, so that
/// nothing but a hash can tell.
fn damage_in_place_keeping_time(cache: &Cache, hash: &str) {
    let blob = cache.blob_path(hash);
    let modified = fs::metadata(&blob).unwrap().modified().unwrap();
    let mut bytes = fs::read(&blob).unwrap();
    bytes[0] ^= 0x01;
    let mut permissions = fs::metadata(&blob).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    permissions.set_readonly(false);
    fs::set_permissions(&blob, permissions).unwrap();
    let mut file = fs::OpenOptions::new().write(true).open(&blob).unwrap();
    file.write_all(&bytes).unwrap();
    file.set_modified(modified).unwrap();
}

#[test]
fn a_damaged_blob_is_replaced_when_identical_content_is_committed_again() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path()).unwrap();
    let first = commit(&cache, "k1", &[("a.txt", "alpha")]);
    let hash = &first.files[0].hash;
    damage_in_place_keeping_time(&cache, hash);
    // Its stat is unchanged, so a lookup trusts it; only a hash shows the damage.
    assert!(
        cache
            .check(&cache.lookup(&["k1"]).unwrap()["k1"])
            .is_empty()
    );
    // A rerun that writes the same bytes (early cutoff, --force) must not keep the damaged blob.
    commit(&cache, "k2", &[("a.txt", "alpha")]);
    assert_eq!(fs::read_to_string(cache.blob_path(hash)).unwrap(), "alpha");
    assert!(cache.verify().unwrap().damaged.is_empty());
}

#[test]
fn rehash_finds_a_change_that_kept_size_and_time() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path()).unwrap();
    let committed = commit(&cache, "k1", &[("a.txt", "alpha")]);
    damage_in_place_keeping_time(&cache, &committed.files[0].hash);
    let damage = cache.rehash(&committed);
    assert_eq!(damage.len(), 1, "{damage:?}");
    assert_eq!(damage[0].path, "a.txt");
    assert!(cache.lookup(&["k1"]).unwrap().is_empty(), "forgotten");
}

fn commit_from(cache: &Cache, key: &str, content: &str, inputs: &[&Record]) -> Record {
    let staging = cache.staging().unwrap();
    fs::write(staging.out_dir().join("out.txt"), content).unwrap();
    fs::write(staging.log_path(), format!("log of {key}\n")).unwrap();
    let mut rec = record(key);
    rec.input_digests = inputs.iter().map(|r| r.output_digest.clone()).collect();
    cache.commit(staging, rec).unwrap()
}

#[test]
fn damage_forgets_every_record_computed_from_the_damaged_output() {
    for via_lookup in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let a = commit_from(&cache, "a", "a out", &[]);
        let b = commit_from(&cache, "b", "b out", &[&a]);
        commit_from(&cache, "c", "c out", &[&b]);
        let other = commit_from(&cache, "other", "other out", &[]);
        commit_from(&cache, "beside", "beside out", &[&other]);
        let blob = cache.blob_path(&a.files[0].hash);
        fs::remove_file(&blob).unwrap();
        fs::write(&blob, "A out").unwrap();
        let mut forgotten = if via_lookup {
            assert!(!cache.check(&cache.lookup(&["a"]).unwrap()["a"]).is_empty());
            ["a", "b", "c"]
                .into_iter()
                .filter(|k| cache.lookup(&[k]).unwrap().is_empty())
                .map(|k| format!("s[{k}]"))
                .collect()
        } else {
            cache.verify().unwrap().records_forgotten
        };
        forgotten.sort();
        assert_eq!(
            forgotten,
            ["s[a]", "s[b]", "s[c]"],
            "via lookup: {via_lookup}"
        );
        for kept in ["other", "beside"] {
            assert_eq!(cache.lookup(&[kept]).unwrap().len(), 1, "{kept}");
        }
    }
}

#[test]
fn a_damaged_log_forgets_only_its_own_record() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path()).unwrap();
    let a = commit_from(&cache, "a", "a out", &[]);
    commit_from(&cache, "b", "b out", &[&a]);
    let log = cache.blob_path(&a.log.as_ref().unwrap().hash);
    fs::remove_file(&log).unwrap();
    fs::write(&log, "LOG of a\n").unwrap();
    assert_eq!(cache.verify().unwrap().records_forgotten, ["s[a]"]);
    assert_eq!(cache.lookup(&["b"]).unwrap().len(), 1);
}

#[test]
fn verify_forgets_records_whose_blobs_are_missing() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path()).unwrap();
    let a = commit_from(&cache, "a", "a out", &[]);
    fs::remove_file(cache.blob_path(&a.files[0].hash)).unwrap();
    let report = cache.verify().unwrap();
    assert_eq!(report.records_forgotten, ["s[a]"]);
    assert!(
        report.damaged[0].1.contains("missing"),
        "{:?}",
        report.damaged
    );
}

#[test]
fn gc_waits_until_no_other_handle_uses_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let run = Cache::open(dir.path()).unwrap();
    let path = dir.path().to_path_buf();
    let (waiting_tx, waiting_rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let gc = std::thread::spawn(move || {
        let cache = Cache::open(&path).unwrap();
        let exclusive = cache.exclusive(|| waiting_tx.send(()).unwrap()).unwrap();
        done_tx.send(()).unwrap();
        exclusive.gc(None, None).unwrap();
    });
    waiting_rx
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("gc says it waits");
    assert!(
        done_rx
            .recv_timeout(std::time::Duration::from_millis(300))
            .is_err(),
        "gc must not start while a run holds the cache"
    );
    drop(run);
    done_rx
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("gc starts once the run is gone");
    gc.join().unwrap();
}

#[test]
fn a_damaged_index_is_reported_and_repaired_keeping_the_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let committed = {
        let cache = Cache::open(dir.path()).unwrap();
        commit(&cache, "k1", &[("a.txt", "alpha")])
    };
    let index = dir.path().join("index.redb");
    let length = fs::metadata(&index).unwrap().len() as usize;
    fs::write(&index, vec![0x55u8; length]).unwrap();
    match Cache::open(dir.path()) {
        Err(umdflow_cache::CacheError::DamagedIndex { path, .. }) => assert_eq!(path, index),
        Err(other) => panic!("expected a damaged index, got {other}"),
        Ok(_) => panic!("a damaged index must not open"),
    }
    let moved = Cache::repair_index(dir.path(), || {})
        .unwrap()
        .expect("moved aside");
    assert!(moved.exists() && index.exists());
    let cache = Cache::open(dir.path()).unwrap();
    assert!(cache.lookup(&["k1"]).unwrap().is_empty());
    assert!(cache.blob_path(&committed.files[0].hash).exists());
    drop(cache);
    assert_eq!(Cache::repair_index(dir.path(), || {}).unwrap(), None);
}

#[test]
fn resume_folders_outlive_failures_and_gc_drops_only_finished_or_unreached_ones() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path()).unwrap();
    for key in ["done", "pending", "gone"] {
        let folder = cache.resume_dir(key).unwrap();
        fs::write(folder.join("checkpoint"), key).unwrap();
    }
    // A folder survives reopening the cache (a crashed or killed attempt).
    drop(cache);
    let cache = Cache::open(dir.path()).unwrap();
    let again = cache.resume_dir("pending").unwrap();
    assert_eq!(
        fs::read_to_string(again.join("checkpoint")).unwrap(),
        "pending"
    );
    // `done` committed, but the process died before removing its folder.
    commit(&cache, "done", &[("a", "x")]);
    let report = cache.exclusive(|| {}).unwrap().gc(None, None).unwrap();
    assert_eq!((report.resume.removed, report.resume.kept), (1, 2));
    assert!(!dir.path().join("resume/done").exists());
    // With pipeline files, only the keys they still have to compute keep theirs.
    let pending: BTreeSet<String> = ["pending".to_string()].into();
    let report = cache
        .exclusive(|| {})
        .unwrap()
        .gc(None, Some(&pending))
        .unwrap();
    assert_eq!((report.resume.removed, report.resume.kept), (1, 1));
    assert!(dir.path().join("resume/pending/checkpoint").exists());
    assert!(!dir.path().join("resume/gone").exists());
    // After a commit the folder goes.
    cache.remove_resume("pending").unwrap();
    cache.remove_resume("pending").unwrap();
    assert!(!dir.path().join("resume/pending").exists());
}
