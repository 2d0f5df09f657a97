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
    let report = cache.exclusive(|| {}).unwrap().gc(Some(&keep)).unwrap();
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
            .gc(Some(&keep))
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
