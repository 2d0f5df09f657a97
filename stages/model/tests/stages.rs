//! The `mask` and `pretrain` stage kinds through the stage interface.

mod common;

use std::sync::Mutex;
use std::sync::atomic::AtomicBool;

use serde_json::json;
use umdflow_model::masking::MaskPlan;
use umdflow_model::{MaskKind, PretrainKind};
use umdflow_stages::{NoProgress, ProgressSink, StageDecl, StageError, StageKind};

#[derive(Default)]
struct Recorder {
    total: Mutex<Option<u64>>,
    position: Mutex<u64>,
    messages: Mutex<Vec<String>>,
}

impl ProgressSink for Recorder {
    fn set_total(&self, total: u64) {
        *self.total.lock().unwrap() = Some(total);
    }
    fn set_position(&self, done: u64) {
        *self.position.lock().unwrap() = done;
    }
    fn set_message(&self, message: &str) {
        self.messages.lock().unwrap().push(message.to_string());
    }
}

fn decl_inputs(kinds: &[&str]) -> Vec<(String, String)> {
    kinds
        .iter()
        .map(|k| (format!("my_{k}"), k.to_string()))
        .collect()
}

#[test]
fn mask_then_pretrain_write_their_outputs() {
    let tmp = tempfile::tempdir().unwrap();
    let ingest = common::input("prep", "ingest", common::ci_ingest_dir());
    let mask_dir = tmp.path().join("mask");
    common::run_stage(
        &MaskKind,
        json!({"epochs": 2, "patch_size": 8, "seed": 4}),
        std::slice::from_ref(&ingest),
        &mask_dir,
        &NoProgress,
        &AtomicBool::new(false),
    )
    .unwrap();
    for file in [
        "mask_plan.safetensors",
        "mask_plan.json",
        "preview.png",
        "metrics.json",
    ] {
        assert!(mask_dir.join(file).is_file(), "mask wrote no {file}");
    }
    let plan = MaskPlan::load(&mask_dir).unwrap();
    assert_eq!(
        (
            plan.meta.epochs,
            plan.meta.num_patches,
            plan.meta.keep_patches
        ),
        (2, 16, 4)
    );
    let preview = std::fs::read(mask_dir.join("preview.png")).unwrap();
    assert_eq!(&preview[1..4], b"PNG");

    let out = tmp.path().join("pretrain");
    let recorder = Recorder::default();
    let inputs = [ingest, common::input("masks", "mask", &mask_dir)];
    common::run_stage(
        &PretrainKind,
        json!({"max_steps": 3, "batch_size": 8, "device": "cpu"}),
        &inputs,
        &out,
        &recorder,
        &AtomicBool::new(false),
    )
    .unwrap();
    for file in [
        "checkpoint.safetensors",
        "model_config.json",
        "loss_curve.csv",
        "loss_curve.png",
        "metrics.json",
    ] {
        assert!(out.join(file).is_file(), "pretrain wrote no {file}");
    }
    assert_eq!(*recorder.total.lock().unwrap(), Some(3));
    assert_eq!(*recorder.position.lock().unwrap(), 3);
    assert!(
        recorder
            .messages
            .lock()
            .unwrap()
            .iter()
            .all(|m| m.starts_with("loss "))
    );
    let csv = std::fs::read_to_string(out.join("loss_curve.csv")).unwrap();
    assert_eq!(csv.lines().count(), 4, "{csv}");
    assert!(csv.starts_with("step,epoch,lr,grad_norm,total,mim,mlm,itm,feamim,feamlm\n"));
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(metrics["steps"], 3);
    assert!(metrics["loss_final"]["total"].as_f64().unwrap().is_finite());
}

#[test]
fn pretrain_stops_when_cancelled() {
    let tmp = tempfile::tempdir().unwrap();
    let ingest = common::input("prep", "ingest", common::ci_ingest_dir());
    let mask = json!({"epochs": 1, "patch_size": 8});
    let inputs = common::mask_inputs(ingest, &tmp.path().join("mask"), mask);
    let result = common::run_stage(
        &PretrainKind,
        json!({"max_steps": 3}),
        &inputs,
        &tmp.path().join("p"),
        &NoProgress,
        &AtomicBool::new(true),
    );
    assert!(matches!(result, Err(StageError::Cancelled)), "{result:?}");
}

#[test]
fn bad_params_are_reported_with_their_field() {
    let inputs = decl_inputs(&["ingest", "mask"]);
    let decl = StageDecl {
        name: "pre",
        run: None,
        inputs: &inputs,
    };
    let problems = PretrainKind
        .resolve_params(&decl, common::params(json!({"optim": {"lrr": 1.0}})))
        .unwrap_err();
    assert!(
        problems[0].message.contains("unknown field `lrr`"),
        "{problems:?}"
    );
    let problems = PretrainKind
        .resolve_params(&decl, common::params(json!({"preset": "huge", "device": "gpu", "loss": {"target_layer": 9, "distance": "mse"}})))
        .unwrap_err();
    let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(fields, ["params.preset", "params.device"], "{problems:?}");
    let problems = PretrainKind
        .resolve_params(&decl, common::params(json!({"loss": {"target_layer": 9}})))
        .unwrap_err();
    assert_eq!(
        problems[0].field, "params.loss.target_layer",
        "{problems:?}"
    );
    let problems = PretrainKind
        .resolve_params(&decl, common::params(json!({"loss": {"distance": "l3"}})))
        .unwrap_err();
    assert_eq!(problems[0].field, "params.loss.distance", "{problems:?}");

    let resolved = PretrainKind
        .resolve_params(&decl, common::params(json!({})))
        .unwrap();
    assert_eq!(resolved["loss"]["alpha"], 1.0);
    assert_eq!(resolved["optim"]["lr_multiplier_head"], 5.0);

    let only_ingest = decl_inputs(&["ingest"]);
    let decl = StageDecl {
        name: "pre",
        run: None,
        inputs: &only_ingest,
    };
    let problems = PretrainKind
        .resolve_params(&decl, common::params(json!({})))
        .unwrap_err();
    assert!(
        problems
            .iter()
            .any(|p| p.field == "inputs" && p.message.contains("`mask`")),
        "{problems:?}"
    );

    let problems = MaskKind
        .resolve_params(
            &decl,
            common::params(json!({"image_ratio": 1.5, "text_ratio": -1})),
        )
        .unwrap_err();
    let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(
        fields,
        ["params.image_ratio", "params.text_ratio"],
        "{problems:?}"
    );
}

#[test]
fn a_patch_size_that_does_not_divide_the_images_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let ingest = common::input("prep", "ingest", common::ci_ingest_dir());
    let err = common::run_stage(
        &MaskKind,
        json!({"patch_size": 7}),
        &[ingest],
        &tmp.path().join("m"),
        &NoProgress,
        &AtomicBool::new(false),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("params.patch_size: 7 does not divide the image size 32"),
        "{err}"
    );
}
