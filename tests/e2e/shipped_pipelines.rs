//! Every pipeline the repository ships validates against the current stage kinds, so a renamed
//! parameter or a changed default cannot leave a shipped file broken.

use std::path::{Path, PathBuf};

use crate::support::*;

fn yaml_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            yaml_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "yaml") {
            found.push(path);
        }
    }
}

#[test]
fn every_shipped_pipeline_plans() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../pipelines");
    let mut files = Vec::new();
    yaml_files(&root, &mut files);
    files.sort();
    let names: Vec<String> = files
        .iter()
        .map(|f| f.strip_prefix(&root).unwrap().display().to_string())
        .collect();
    for expected in [
        "ablation.yaml",
        "quickstart.yaml",
        "effects/p1_gate.yaml",
        "effects/p2_pretrain.yaml",
        "effects/p3_gm_coord.yaml",
        "effects/e1_masking_ratio.yaml",
        "real/vqa-rad.yaml",
        "real/slake.yaml",
        "real/roco-retrieval.yaml",
        "real/melinda.yaml",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing: {names:?}"
        );
    }
    let project = Project::new();
    let cache = project.path("cache");
    for file in &files {
        let plan = project.json(
            &[
                "plan",
                file.to_str().unwrap(),
                "--cache",
                cache.to_str().unwrap(),
            ],
            0,
        );
        assert!(
            plan["run"].as_u64().unwrap() > 0,
            "{}: {plan}",
            file.display()
        );
    }
}

/// A real-data pipeline whose dataset is not on disk fails with an error naming the path.
#[test]
fn a_real_pipeline_without_its_data_names_the_missing_folder() {
    let project = Project::new();
    let pipeline = Path::new(env!("CARGO_MANIFEST_DIR")).join("../pipelines/real/vqa-rad.yaml");
    let missing = project.path("no-such-ROCO");
    let output = project.umdflow(&[
        "run",
        pipeline.to_str().unwrap(),
        "--cache",
        project.path("cache").to_str().unwrap(),
        "--no-lock-file",
        "-q",
        "--set",
        &format!("roco.params.path={}", missing.display()),
    ]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let text = stderr(&output);
    assert!(text.contains("no-such-ROCO"), "{text}");
}
