use crate::support::*;

fn setup() -> Project {
    let project = Project::new();
    project.write("prep.txt", "raw data\n");
    project.write("p.yaml", &sweep_pipeline("[0.25, 0.5, 0.75]"));
    project
}

#[test]
fn first_run_executes_everything_and_a_second_nothing() {
    let project = setup();
    let first = project.json(&["run", "p.yaml"], 0);
    assert_eq!(first["executed"], 13, "{first}");
    assert_eq!(first["cached"], 0);
    // The shared upstream stage of the 3x2 sweep ran once.
    assert_eq!(project.journal().iter().filter(|l| *l == "prep").count(), 1);
    assert_eq!(project.journal().len(), 13);

    project.clear_journal();
    let second = project.json(&["run", "p.yaml"], 0);
    assert_eq!(second["executed"], 0, "{second}");
    assert_eq!(second["cached"], 13);
    assert!(project.journal().is_empty());
    assert!(
        project.path(".umdflow/index.redb").exists(),
        "default cache beside the pipeline"
    );
}

#[test]
fn changing_one_axis_value_reruns_exactly_its_instances() {
    let project = setup();
    project.json(&["run", "p.yaml"], 0);
    let plan = project.json(
        &["plan", "p.yaml", "--set", "sweep.ratio=[0.25, 0.5, 0.9]"],
        0,
    );
    assert_eq!(
        with_status(&plan, "run"),
        [
            "report[ratio=0.9,seed=0]",
            "report[ratio=0.9,seed=1]",
            "train[ratio=0.9,seed=0]",
            "train[ratio=0.9,seed=1]"
        ]
    );
    let reason = plan["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "train[ratio=0.9,seed=0]")
        .unwrap()["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(reason.contains("params.ratio: 0.75 -> 0.9"), "{reason}");

    let run = project.json(
        &["run", "p.yaml", "--set", "sweep.ratio=[0.25, 0.5, 0.9]"],
        0,
    );
    assert_eq!(with_status(&run, "executed"), with_status(&plan, "run"));
    assert_eq!(run["cached"], 9);
}

#[test]
fn adding_a_seed_runs_only_the_new_instances() {
    let project = setup();
    project.json(&["run", "p.yaml"], 0);
    let run = project.json(&["run", "p.yaml", "--set", "seeds=[0, 1, 2]"], 0);
    assert_eq!(run["executed"], 6, "{run}");
    assert!(
        with_status(&run, "executed")
            .iter()
            .all(|id| id.contains("seed=2"))
    );
}

#[test]
fn editing_a_dep_reruns_its_stage_and_descendants_only() {
    let project = Project::new();
    project.write("a.txt", "a1");
    project.write("b.txt", "b1");
    project.write(
        "p.yaml",
        &format!(
            r#"name: deps
stages:
  a:
    kind: cmd
    run: '{RECORD}'
    deps: [a.txt]
  b:
    kind: cmd
    run: 'cat b.txt > "$UMDFLOW_OUT/b"; echo b >> "$JOURNAL"'
    deps: [b.txt]
  c:
    kind: cmd
    inputs: [b]
    run: 'cat "$UMDFLOW_INPUT_B/b" > "$UMDFLOW_OUT/x"; echo c >> "$JOURNAL"'
"#
        ),
    );
    project.json(&["run", "p.yaml"], 0);
    project.write("b.txt", "b2");
    let plan = project.json(&["plan", "p.yaml"], 0);
    let b = &plan["stages"][1];
    assert_eq!(b["reason"], "deps b.txt changed", "{plan}");
    assert_eq!(plan["stages"][2]["reason"], "input b reruns");
    let run = project.json(&["run", "p.yaml"], 0);
    assert_eq!(with_status(&run, "executed"), ["b", "c"]);
    assert_eq!(with_status(&run, "cached"), ["a"]);
}

#[test]
fn early_cutoff_an_identical_rerun_reruns_nothing_below() {
    let project = Project::new();
    // `a`'s output does not depend on its `note` param, so changing the note reruns `a` only.
    project.write(
        "p.yaml",
        r#"name: cutoff
stages:
  a:
    kind: cmd
    run: 'echo same > "$UMDFLOW_OUT/out"; echo a >> "$JOURNAL"'
    params: {note: one}
  b:
    kind: cmd
    inputs: [a]
    run: 'cp "$UMDFLOW_INPUT_A/out" "$UMDFLOW_OUT/out"; echo b >> "$JOURNAL"'
"#,
    );
    project.json(&["run", "p.yaml"], 0);
    project.clear_journal();
    let run = project.json(&["run", "p.yaml", "--set", "a.params.note=two"], 0);
    assert_eq!(with_status(&run, "executed"), ["a"]);
    assert_eq!(with_status(&run, "cached"), ["b"]);
    assert_eq!(project.journal(), ["a"]);
}

#[test]
fn a_flipped_byte_in_a_blob_is_detected_and_recomputed() {
    let project = setup();
    project.json(&["run", "p.yaml"], 0);
    // Find the blob of prep's data.txt ("raw data\n") and flip a byte.
    let blobs = project.path(".umdflow/blobs");
    let mut target = None;
    for dir in std::fs::read_dir(&blobs).unwrap() {
        for file in std::fs::read_dir(dir.unwrap().path()).unwrap() {
            let path = file.unwrap().path();
            if std::fs::read(&path).unwrap() == b"raw data\n" {
                target = Some(path);
            }
        }
    }
    let target = target.expect("prep's output blob");
    let mut permissions = std::fs::metadata(&target).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    permissions.set_readonly(false);
    std::fs::set_permissions(&target, permissions).unwrap();
    std::fs::write(&target, b"raw dbta\n").unwrap();

    project.clear_journal();
    let output = project
        .command(&["run", "p.yaml", "--json"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let run: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let prep = &run["stages"][0];
    assert_eq!(prep["status"], "executed");
    assert!(
        prep["reason"].as_str().unwrap().contains("damaged"),
        "{prep}"
    );
    // The damage may predate the records computed from prep's output, so they are forgotten too
    // and recompute (docs/caching.md, "Damage"), although prep's new output is identical.
    assert_eq!(run["executed"], 13, "{run}");
    assert_eq!(
        std::fs::read(&target).unwrap(),
        b"raw data\n",
        "the blob is restored"
    );
    let verify = project.umdflow(&["verify", "p.yaml"]);
    assert_eq!(verify.status.code(), Some(0), "{}", stderr(&verify));
}

#[test]
fn verify_reports_damage_and_the_stage_recomputes() {
    let project = setup();
    project.json(&["run", "p.yaml"], 0);
    let blobs = project.path(".umdflow/blobs");
    let dir = std::fs::read_dir(&blobs)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let blob = std::fs::read_dir(dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::remove_file(&blob).unwrap();
    std::fs::write(&blob, "garbage").unwrap();
    let verify = project.umdflow(&["verify", "p.yaml"]);
    assert_eq!(verify.status.code(), Some(1));
    assert!(
        stderr(&verify).contains("damaged blob"),
        "{}",
        stderr(&verify)
    );
    let run = project.json(&["run", "p.yaml"], 0);
    assert!(run["executed"].as_u64().unwrap() >= 1, "{run}");
    assert_eq!(
        project.umdflow(&["verify", "p.yaml"]).status.code(),
        Some(0)
    );
}

#[test]
fn force_reruns_a_stage_even_when_cached() {
    let project = setup();
    project.json(&["run", "p.yaml"], 0);
    let run = project.json(&["run", "p.yaml", "--force", "prep"], 0);
    assert_eq!(with_status(&run, "executed"), ["prep"]);
    assert_eq!(
        run["cached"], 12,
        "identical output: early cutoff keeps the rest"
    );
}

#[test]
fn grid_zip_and_one_at_a_time_designs() {
    let project = Project::new();
    let pipeline = |design: &str| {
        format!(
            r#"name: designs
design: {design}
baseline: {{a: 1, b: x}}
sweep:
  a: [1, 2, 3]
  b: [x, y, z]
stages:
  s:
    kind: cmd
    run: 'true'
    params: {{a: "${{a}}", b: "${{b}}"}}
"#
        )
    };
    project.write(
        "zip.yaml",
        &pipeline("zip").replace("baseline: {a: 1, b: x}\n", ""),
    );
    project.write("ooat.yaml", &pipeline("one-at-a-time"));
    let zip = project.json(&["plan", "zip.yaml"], 0);
    let ids: Vec<String> = statuses(&zip).into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids, ["s[a=1,b=x]", "s[a=2,b=y]", "s[a=3,b=z]"]);
    let ooat = project.json(&["plan", "ooat.yaml"], 0);
    let ids: Vec<String> = statuses(&ooat).into_iter().map(|(id, _)| id).collect();
    assert_eq!(
        ids,
        [
            "s[a=1,b=x]",
            "s[a=2,b=x]",
            "s[a=3,b=x]",
            "s[a=1,b=y]",
            "s[a=1,b=z]"
        ]
    );
}

#[test]
fn arms_share_the_stages_whose_fields_agree() {
    let project = Project::new();
    project.write(
        "p.yaml",
        &format!(
            r#"name: arms
seeds: 2
design: one-at-a-time
baseline: {{arm: full, ratio: 0.5}}
sweep:
  arm:
    - {{name: base, fea: false, coord: false}}
    - {{name: plus-fea, fea: true, coord: false}}
    - {{name: full, fea: true, coord: true}}
  ratio: [0.25, 0.5]
stages:
  pretrain:
    kind: cmd
    run: '{RECORD}'
    params: {{fea: "${{arm.fea}}", ratio: "${{ratio}}", seed: "${{seed}}"}}
  tune:
    kind: cmd
    inputs: [pretrain]
    run: '{RECORD}'
    params: {{coord: "${{arm.coord}}", arm: "${{arm}}"}}
"#
        ),
    );
    let plan = project.json(&["plan", "p.yaml"], 0);
    let ids: Vec<String> = statuses(&plan).into_iter().map(|(id, _)| id).collect();
    // Points: full@0.5 (baseline), base@0.5, plus-fea@0.5, full@0.25; x 2 seeds.
    // pretrain reads only `fea`: plus-fea and full share it at ratio 0.5.
    let pretrains: Vec<&String> = ids.iter().filter(|id| id.starts_with("pretrain")).collect();
    assert_eq!(pretrains.len(), 6, "{pretrains:?}");
    assert!(
        ids.contains(&"pretrain[arm.fea=true,ratio=0.5,seed=1]".to_string()),
        "{ids:?}"
    );
    let tunes = ids.iter().filter(|id| id.starts_with("tune")).count();
    assert_eq!(tunes, 8, "one per point: {ids:?}");
    assert!(
        ids.contains(&"tune[arm=plus-fea,ratio=0.5,seed=0]".to_string()),
        "{ids:?}"
    );
    project.json(&["run", "p.yaml"], 0);
    assert_eq!(project.journal().len(), 14);
}
