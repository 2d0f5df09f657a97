//! What a stage can observe is in its key (issue 11, item 6), and the review's validation gaps
//! (item 9): `--force` typos, duplicate seeds, `export`'s lock file and the README's command.

use std::path::Path;

use crate::support::*;

fn plan(project: &Project, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["plan", "p.yaml"];
    all.extend_from_slice(args);
    project.json(&all, 0)
}

fn run(project: &Project, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["run", "p.yaml", "--no-lock-file"];
    all.extend_from_slice(args);
    project.json(&all, 0)
}

#[test]
fn two_cmd_stages_with_one_command_are_two_keys() {
    let project = Project::new();
    let stage = format!("    kind: cmd\n    run: '{}'\n", RECORD.replace('\'', "''"));
    project.write(
        "p.yaml",
        &format!("name: p\nstages:\n  left:\n{stage}  right:\n{stage}"),
    );
    let document = run(&project, &[]);
    assert_eq!(with_status(&document, "executed"), ["left", "right"]);
    let mut journal = project.journal();
    journal.sort();
    assert_eq!(
        journal,
        ["left", "right"],
        "each saw its own UMDFLOW_INSTANCE"
    );
}

/// docs/caching.md, "Renaming a stage": a `cmd` stage sees its name, so renaming it reruns it
/// and the `cmd` stages that read it (they see it as `UMDFLOW_INPUT_<NAME>`); below those, early
/// cutoff keeps everything whose inputs came out identical.
#[test]
fn renaming_a_cmd_stage_reruns_it_and_its_readers_only() {
    let project = Project::new();
    let pipeline = |name: &str| {
        format!(
            r#"name: p
stages:
  {name}:
    kind: cmd
    run: 'echo data > "$UMDFLOW_OUT/d"; echo "$UMDFLOW_INSTANCE" >> "$JOURNAL"'
  train:
    kind: cmd
    inputs: [{name}]
    run: 'echo model > "$UMDFLOW_OUT/m"; echo "$UMDFLOW_INSTANCE" >> "$JOURNAL"'
  score:
    kind: cmd
    inputs: [train]
    run: 'echo "$UMDFLOW_INSTANCE" >> "$JOURNAL"'
"#
        )
    };
    project.write("p.yaml", &pipeline("prep"));
    run(&project, &[]);
    project.clear_journal();
    project.write("p.yaml", &pipeline("data"));
    let document = run(&project, &[]);
    assert_eq!(with_status(&document, "executed"), ["data", "train"]);
    assert_eq!(with_status(&document, "cached"), ["score"]);
}

const ML: &str = "    kind: ingest
    params: {source: synthrad, preset: ci, domain: source, count: 32, seed: 0}
  plan:
    kind: mask
    inputs: [NAME]
    params: {epochs: 1, image_ratio: 0.75, text_ratio: 0.15, patch_size: 8, seed: 0}
";

/// The ML kinds find their inputs by kind and never see names, so renaming reruns nothing.
#[test]
fn renaming_an_ml_stage_reruns_nothing() {
    let project = Project::new();
    let pipeline =
        |name: &str| format!("name: p\nstages:\n  {name}:\n{}", ML.replace("NAME", name));
    project.write("p.yaml", &pipeline("corpus"));
    let document = run(&project, &[]);
    assert_eq!(with_status(&document, "executed"), ["corpus", "plan"]);
    project.write("p.yaml", &pipeline("images"));
    let planned = plan(&project, &[]);
    assert_eq!(planned["run"], 0, "{planned}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A real dataset is keyed by its content: moved data stays cached, edited data reruns.
#[test]
fn ingest_keys_the_datasets_content_not_its_path() {
    let project = Project::new();
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../stages/data/fixtures/image-folder");
    copy_dir(&fixture, &project.path("data/a"));
    project.write(
        "p.yaml",
        "name: p\nstages:\n  scans:\n    kind: ingest\n    params: {source: image-folder, path: data/a, image_size: 16, max_len: 24, vocab_size: 80}\n",
    );
    let document = run(&project, &[]);
    assert_eq!(with_status(&document, "executed"), ["scans"]);

    std::fs::rename(project.path("data/a"), project.path("data/b")).unwrap();
    let moved = plan(&project, &["--set", "scans.params.path=data/b"]);
    assert_eq!(moved["run"], 0, "moved data is the same data: {moved}");

    let image = project.path("data/b/test/normal/d.png");
    let mut bytes = std::fs::read(&image).unwrap();
    bytes.extend_from_slice(b"edited");
    std::fs::write(&image, bytes).unwrap();
    let edited = plan(&project, &["--set", "scans.params.path=data/b"]);
    assert_eq!(edited["run"], 1, "{edited}");
    let reason = edited["stages"][0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("content of params.path changed"),
        "{reason}"
    );
}

#[test]
fn a_force_naming_no_stage_is_an_error() {
    let project = Project::new();
    project.write("prep.txt", "x");
    project.write("p.yaml", &sweep_pipeline("[0.5]"));
    let output = project.umdflow(&["run", "p.yaml", "--force", "trian"]);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{err}");
    assert!(
        err.contains("(--force trian)") && err.contains("no stage or instance is named `trian`"),
        "{err}"
    );
    assert!(err.contains("prep, train, report"), "{err}");
    assert!(project.journal().is_empty(), "nothing may run");
    // A stage name, an instance id and `all` are accepted.
    for force in ["train", "train[ratio=0.5,seed=1]", "all"] {
        project.json(&["plan", "p.yaml", "--force", force], 0);
    }
}

#[test]
fn duplicate_seeds_are_refused_with_their_position() {
    let project = Project::new();
    project.write(
        "p.yaml",
        "name: p\nseeds: [0, 1, 0]\nstages:\n  a: {kind: cmd, run: 'true', params: {s: '${seed}'}}\n",
    );
    let output = project.umdflow(&["plan", "p.yaml"]);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{err}");
    assert!(err.contains("p.yaml:2:15: seed 0 is listed twice"), "{err}");
}

/// `export` ships the lock file beside the pipeline only if it describes this expansion.
#[test]
fn export_never_ships_another_runs_lock_file() {
    let project = Project::new();
    project.write("prep.txt", "x");
    project.write("p.yaml", &sweep_pipeline("[0.25, 0.5]"));
    project.json(&["run", "p.yaml"], 0);
    project.json(&["run", "p.yaml", "--set", "sweep.ratio=[0.9]"], 0);
    let beside: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(project.path("p.lock.json")).unwrap())
            .unwrap();
    assert_eq!(beside["overrides"][0], "sweep.ratio=[0.9]");

    let out = project.path("export");
    let output = project.umdflow(&["export", "p.yaml", "--out", out.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let exported: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("p.lock.json")).unwrap()).unwrap();
    assert_eq!(exported["overrides"], serde_json::json!([]));
    let ids: Vec<&str> = exported["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"train[ratio=0.25,seed=0]"), "{ids:?}");
    assert!(!ids.iter().any(|id| id.contains("0.9")), "{ids:?}");

    // With the matching --set, the lock file of that run is shipped as written.
    let again = project.path("export-0.9");
    let output = project.umdflow(&[
        "export",
        "p.yaml",
        "--set",
        "sweep.ratio=[0.9]",
        "--out",
        again.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(
        std::fs::read_to_string(again.join("p.lock.json")).unwrap(),
        std::fs::read_to_string(project.path("p.lock.json")).unwrap()
    );
}

/// The README's `umdflow plan ... --set ...` example works as written.
#[test]
fn the_readme_plan_command_works() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let start = readme
        .find("`umdflow plan ")
        .expect("the README shows a plan command");
    let command = &readme[start + 1..];
    let command = &command[..command.find('`').unwrap()];
    let args: Vec<&str> = command.split_whitespace().skip(1).collect();
    let project = Project::new();
    let cache = project.path("cache");
    let output = std::process::Command::new(BIN)
        .args(&args)
        .args(["--cache", cache.to_str().unwrap(), "--json"])
        .current_dir(&root)
        .env_remove("UMDFLOW_CACHE")
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{command}: {}",
        stderr(&output)
    );
    let plan: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(plan["run"].as_u64().unwrap() > 0, "{plan}");
}

/// Ctrl-C during a `cmd` stage ends the command's children too, not only its shell.
#[test]
fn ctrl_c_kills_a_shells_sleeping_child() {
    let project = Project::new();
    project.write(
        "p.yaml",
        "name: p\nstages:\n  wait:\n    kind: cmd\n    run: 'sleep 60 & echo $! > child.pid; wait'\n",
    );
    let child = project
        .command(&["run", "p.yaml", "--no-lock-file", "-q"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid_file = project.path("child.pid");
    let started = std::time::Instant::now();
    while !std::fs::read_to_string(&pid_file).is_ok_and(|pid| pid.ends_with('\n')) {
        assert!(started.elapsed().as_secs() < 30, "the stage never started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(130), "{}", stderr(&output));
    let sleeper = std::fs::read_to_string(&pid_file).unwrap();
    let stat = format!("/proc/{}/stat", sleeper.trim());
    for _ in 0..100 {
        // Gone, or a zombie waiting for a reaper: either way it no longer runs.
        match std::fs::read_to_string(&stat) {
            Err(_) => return,
            Ok(text)
                if text
                    .rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z') =>
            {
                return;
            }
            Ok(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
        }
    }
    panic!(
        "the shell's child {} still runs after Ctrl-C",
        sleeper.trim()
    );
}

/// `pretrain`'s `init:` folders and `ingest`'s `tokenizer` are keyed by content: moved weights
/// stay cached, an edited file reruns what reads it.
#[test]
fn pretrained_weights_and_tokenizers_are_keyed_by_content_not_path() {
    let project = Project::new();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../stages/model/tests/fixtures/hf");
    copy_dir(&fixtures.join("clip-vit"), &project.path("weights/clip"));
    copy_dir(&fixtures.join("roberta"), &project.path("weights/roberta"));
    project.write(
        "p.yaml",
        "name: p\nstages:\n  prep:\n    kind: ingest\n    params: {source: synthrad, preset: ci, count: 40, max_len: 12, seed: 1, tokenizer: weights/roberta/tokenizer.json}\n  masks:\n    kind: mask\n    inputs: [prep]\n    params: {epochs: 1, patch_size: 8}\n  pre:\n    kind: pretrain\n    inputs: [prep, masks]\n    params:\n      max_steps: 1\n      batch_size: 4\n      device: cpu\n      init: {image: weights/clip, text: weights/roberta}\n",
    );
    let document = run(&project, &[]);
    assert_eq!(with_status(&document, "executed"), ["masks", "pre", "prep"]);

    std::fs::rename(project.path("weights"), project.path("moved")).unwrap();
    let moved_args = [
        "--set",
        "prep.params.tokenizer=moved/roberta/tokenizer.json",
        "--set",
        "pre.params.init.image=moved/clip",
        "--set",
        "pre.params.init.text=moved/roberta",
    ];
    let moved = plan(&project, &moved_args);
    assert_eq!(
        moved["run"], 0,
        "moved weights are the same weights: {moved}"
    );

    let config = project.path("moved/clip/preprocessor_config.json");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("0.48145466", "0.5")).unwrap();
    let edited = plan(&project, &moved_args);
    assert_eq!(edited["run"], 1, "{edited}");
    let reasons = edited.to_string();
    assert!(
        reasons.contains("content of params.init.image changed"),
        "{reasons}"
    );
}
