//! Pretrained encoders from Hugging Face folders: umdflow's encoders, given the weights of tiny
//! random `CLIPVisionModel`, `RobertaModel` and `BertModel`s saved by `transformers`, compute what
//! the Python models computed on the same inputs (to 1e-4), and a file that does not fit the layout
//! is refused with every offending tensor named.
//!
//! The fixtures are made by `scripts/make-hf-fixtures.py` (torch and transformers are not needed
//! here).

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use umdflow_model::config::ModelConfig;
use umdflow_model::model::encoders::{TextEncoder, VisionEncoder};
use umdflow_model::ops;
use umdflow_model::pretrained::{
    CLIP_MEAN, EncoderInit, ImageNormalization, MODEL_INPUT_SCALE, MODEL_INPUT_SHIFT,
    load_image_encoder, load_text_encoder,
};
use umdflow_model::store::ParamStore;

const TOLERANCE: f32 = 1e-4;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hf")
        .join(name)
}

fn reference(name: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture(name).join("reference.safetensors"), &Device::Cpu)
        .expect("reference outputs")
}

/// Largest absolute difference; `rows` keeps only the [batch, token] positions where it is 1.
fn max_abs_diff(ours: &Tensor, theirs: &Tensor, rows: Option<&Tensor>) -> f32 {
    assert_eq!(ours.dims(), theirs.dims(), "shapes differ");
    let diff = (ours - theirs).unwrap().abs().unwrap();
    let diff = match rows {
        Some(mask) => diff.broadcast_mul(&mask.unsqueeze(2).unwrap()).unwrap(),
        None => diff,
    };
    diff.flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap()
}

fn assert_close(what: &str, ours: &Tensor, theirs: &Tensor, rows: Option<&Tensor>) {
    let d = max_abs_diff(ours, theirs, rows);
    eprintln!("{what}: max abs difference {d:e}");
    assert!(
        d <= TOLERANCE,
        "{what}: max abs difference {d} > {TOLERANCE}"
    );
}

/// A tiny model config whose encoders `inits` then size.
fn config_for(inits: &[&EncoderInit], image_size: usize, max_len: usize) -> ModelConfig {
    let mut config = ModelConfig::preset("tiny", image_size, 3, 8, 100, max_len).unwrap();
    for init in inits {
        init.configure(&mut config);
    }
    config.validate().unwrap();
    config
}

/// [B, C, S, S] pixels → [B, L, C·p·p] patches, channel-major inside a patch (the layout of
/// `batch::patchify` and of a stride-p convolution's kernel).
fn patches(pixels: &Tensor, patch: usize) -> Tensor {
    let (b, c, s, _) = pixels.dims4().unwrap();
    let g = s / patch;
    pixels
        .reshape((b, c, g, patch, g, patch))
        .unwrap()
        .permute((0, 2, 4, 1, 3, 5))
        .unwrap()
        .contiguous()
        .unwrap()
        .reshape((b, g * g, c * patch * patch))
        .unwrap()
}

fn vision_encoder(image_size: usize, layers: Option<usize>) -> (VisionEncoder, ModelConfig) {
    let init = load_image_encoder(&fixture("clip-vit"), image_size, layers, &Device::Cpu)
        .expect("the CLIP fixture loads");
    let config = config_for(&[&init], image_size, 16);
    let mut store = ParamStore::new(&Device::Cpu, 0);
    let encoder = VisionEncoder::new(&mut store, &config).unwrap();
    init.copy_into(&store).expect("every weight fits");
    (encoder, config)
}

#[test]
fn clip_vit_matches_transformers_on_the_same_pixels() {
    let r = reference("clip-vit");
    let (encoder, config) = vision_encoder(32, None);
    assert_eq!(
        (
            config.vision_width,
            config.vision_layers,
            config.vision_heads
        ),
        (32, 2, 4)
    );
    assert_eq!(
        (config.vision_mlp, config.patch_size, config.channels),
        (64, 8, 3)
    );
    assert_eq!(config.vision_norm_eps, Some(1e-5));
    let x = patches(&r["pixel_values"], 8);

    // The embeddings' output (before `ln_pre`), from the encoder's own tensors.
    let (b, l, _) = x.dims3().unwrap();
    let w = config.vision_width;
    let tokens = ops::linear(&x, &encoder.patch_embed, None)
        .unwrap()
        .broadcast_add(&encoder.positional_embedding.narrow(0, 1, l).unwrap())
        .unwrap();
    let cls = (&encoder.class_embedding + encoder.positional_embedding.get(0).unwrap())
        .unwrap()
        .reshape((1, 1, w))
        .unwrap()
        .broadcast_as((b, 1, w))
        .unwrap();
    let embeddings = Tensor::cat(&[&cls, &tokens], 1).unwrap();
    assert_close("CLIP embeddings", &embeddings, &r["embeddings"], None);

    let out = encoder.forward(&x, None).unwrap();
    assert_close("CLIP layer 1", &out.blocks[0], &r["hidden_states.1"], None);
    assert_close(
        "CLIP last hidden state",
        &out.blocks[1],
        &r["last_hidden_state"],
        None,
    );
    assert_close("CLIP post-layernorm", &out.last, &r["post_layernorm"], None);
}

#[test]
fn clip_positions_are_resampled_bicubically_as_torch_does() {
    for side in [40, 48] {
        let init = load_image_encoder(&fixture("clip-vit"), side, None, &Device::Cpu).unwrap();
        let ours = &init.tensors["vision_encoder.positional_embedding"];
        let theirs = &reference("clip-vit")[&format!("positions_{side}")];
        assert_close(&format!("positions at {side} px"), ours, theirs, None);
    }
    // The whole encoder at 48 px against transformers' `interpolate_pos_encoding=True`.
    let r = reference("clip-vit");
    let (encoder, _) = vision_encoder(48, None);
    let out = encoder
        .forward(&patches(&r["pixel_values_48"], 8), None)
        .unwrap();
    assert_close("CLIP at 48 px", &out.last, &r["post_layernorm_48"], None);
}

#[test]
fn clip_keeps_only_the_layers_asked_for() {
    let r = reference("clip-vit");
    let (encoder, config) = vision_encoder(32, Some(1));
    assert_eq!(config.vision_layers, 1);
    let out = encoder
        .forward(&patches(&r["pixel_values"], 8), None)
        .unwrap();
    assert_close(
        "CLIP layer 1 of 1",
        &out.blocks[0],
        &r["hidden_states.1"],
        None,
    );
    let err = load_image_encoder(&fixture("clip-vit"), 32, Some(3), &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("3 image-encoder layers asked for") && err.contains("has 2"),
        "{err}"
    );
}

/// Runs the text fixture `name` through umdflow's text encoder and compares with the reference;
/// `real_tokens_only` compares only unpadded positions.
fn text_matches(name: &str, real_tokens_only: bool) {
    let r = reference(name);
    let ids = r["input_ids"].to_dtype(DType::U32).unwrap();
    let mask = r["attention_mask"].to_dtype(DType::F32).unwrap();
    let (_, t) = ids.dims2().unwrap();
    let init = load_text_encoder(&fixture(name), t, &Device::Cpu).expect("the fixture loads");
    let config = config_for(&[&init], 32, t);
    let mut store = ParamStore::new(&Device::Cpu, 0);
    let encoder = TextEncoder::new(&mut store, &config).unwrap();
    init.copy_into(&store).expect("every weight fits");
    let rows = real_tokens_only.then_some(&mask);

    let embeddings = encoder
        .ln_embed
        .forward(
            &encoder
                .word_embeddings
                .forward(&ids)
                .unwrap()
                .broadcast_add(&encoder.position_embeddings.narrow(0, 0, t).unwrap())
                .unwrap(),
        )
        .unwrap();
    assert_close(
        &format!("{name} embeddings"),
        &embeddings,
        &r["embeddings"],
        rows,
    );
    let out = encoder.forward(&ids, &mask).unwrap();
    assert_close(
        &format!("{name} layer 1"),
        &out.blocks[0],
        &r["hidden_states.1"],
        rows,
    );
    assert_close(
        &format!("{name} last hidden state"),
        &out.last,
        &r["last_hidden_state"],
        rows,
    );
}

#[test]
fn roberta_matches_transformers_on_real_tokens() {
    // RoBERTa gives padding the position row `padding_idx`; umdflow masks padding, so only real
    // tokens are compared (their outputs cannot see the padding).
    text_matches("roberta", true);
}

#[test]
fn bert_matches_transformers_on_every_token() {
    // BERT's layer-norm epsilon is 1e-12 in the fixture; umdflow's default 1e-5 would be off by
    // about 1 % on the embeddings' small-variance input.
    text_matches("bert", false);
}

/// A copy of a fixture folder whose `model.safetensors` is rewritten by `edit`.
fn edited_copy(name: &str, edit: impl FnOnce(&mut HashMap<String, Tensor>)) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for file in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture(name).join(file), dir.path().join(file)).unwrap();
    }
    let path = dir.path().join("model.safetensors");
    let mut tensors = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    edit(&mut tensors);
    candle_core::safetensors::save(&tensors, &path).unwrap();
    dir
}

#[test]
fn a_missing_extra_or_misshaped_tensor_is_named_in_the_error() {
    let missing = edited_copy("clip-vit", |t| {
        t.remove("encoder.layers.1.mlp.fc2.bias");
    });
    let err = load_image_encoder(missing.path(), 32, None, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("model.safetensors"), "{err}");
    assert!(
        err.contains("missing tensor `encoder.layers.1.mlp.fc2.bias` (expected shape [32])"),
        "{err}"
    );

    let extra = edited_copy("roberta", |t| {
        let any = t["embeddings.LayerNorm.bias"].clone();
        t.insert("encoder.layer.0.attention.self.rotary.weight".into(), any);
    });
    let err = load_text_encoder(extra.path(), 12, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("tensor `encoder.layer.0.attention.self.rotary.weight` [32] is not part of the RoBERTa layout"),
        "{err}"
    );

    let misshaped = edited_copy("bert", |t| {
        let w = t["encoder.layer.0.intermediate.dense.weight"]
            .t()
            .unwrap()
            .contiguous()
            .unwrap();
        t.insert("encoder.layer.0.intermediate.dense.weight".into(), w);
    });
    let err = load_text_encoder(misshaped.path(), 12, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(
            "tensor `encoder.layer.0.intermediate.dense.weight` has shape [32, 64], expected [64, 32]"
        ),
        "{err}"
    );

    // Several problems at once are all listed.
    let both = edited_copy("bert", |t| {
        t.remove("embeddings.word_embeddings.weight");
        t.remove("encoder.layer.1.output.LayerNorm.weight");
    });
    let err = load_text_encoder(both.path(), 12, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("(2 problems)"), "{err}");
    assert!(err.contains("`embeddings.word_embeddings.weight`"), "{err}");
    assert!(
        err.contains("`encoder.layer.1.output.LayerNorm.weight`"),
        "{err}"
    );
}

#[test]
fn a_full_clip_checkpoint_gives_its_vision_tower_and_sets_the_text_tower_aside() {
    // `openai/clip-vit-base-patch16` is a whole CLIPModel: `vision_model.`-prefixed tensors beside
    // the text tower, and the vision settings nested in `vision_config`.
    let dir = edited_copy("clip-vit", |t| {
        let names: Vec<String> = t.keys().cloned().collect();
        for name in names {
            let tensor = t.remove(&name).unwrap();
            t.insert(format!("vision_model.{name}"), tensor);
        }
        let any = t["vision_model.post_layernorm.bias"].clone();
        t.insert("text_model.final_layer_norm.bias".into(), any.clone());
        t.insert("visual_projection.weight".into(), any.clone());
        t.insert("logit_scale".into(), any);
    });
    let vision: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("clip-vit").join("config.json")).unwrap(),
    )
    .unwrap();
    let config = serde_json::json!({"model_type": "clip", "vision_config": vision});
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    let full = load_image_encoder(dir.path(), 32, None, &Device::Cpu).expect("loads");
    let bare = load_image_encoder(&fixture("clip-vit"), 32, None, &Device::Cpu).unwrap();
    assert_eq!(full.tensors.len(), bare.tensors.len());
    for (name, tensor) in &bare.tensors {
        assert_eq!(
            max_abs_diff(&full.tensors[name], tensor, None),
            0.0,
            "{name}"
        );
    }
}

#[test]
fn a_config_umdflow_cannot_honour_is_refused_with_its_field() {
    let dir = edited_copy("bert", |_| {});
    let path = dir.path().join("config.json");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("\"gelu\"", "\"gelu_new\"")).unwrap();
    let err = load_text_encoder(dir.path(), 12, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("config.json") && err.contains("field `hidden_act` is `gelu_new`"),
        "{err}"
    );
    let err = load_text_encoder(&fixture("bert"), 20, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("texts of 20 tokens need 20 position rows")
            && err.contains("max_position_embeddings 16"),
        "{err}"
    );
}

#[test]
fn the_folded_grey_input_gives_what_clip_computes_on_the_normalised_rgb_image() {
    // CLIP sees (x − mean_c) / std_c on three channels; umdflow feeds 2x − 1 on one. The folded
    // encoder must compute the same on the same grey image.
    let r = reference("clip-vit");
    let (rgb, _) = vision_encoder(32, None);
    let dir = fixture("clip-vit");
    let mut init = load_image_encoder(&dir, 32, None, &Device::Cpu).unwrap();
    let norm = ImageNormalization::read(&dir, 3).unwrap();
    assert_eq!(norm.mean, CLIP_MEAN.to_vec());
    init.fold_pixel_input(1, &norm, MODEL_INPUT_SCALE, MODEL_INPUT_SHIFT)
        .unwrap();
    let config = config_for(&[&init], 32, 16);
    assert_eq!(config.channels, 1);
    let mut store = ParamStore::new(&Device::Cpu, 0);
    let grey = VisionEncoder::new(&mut store, &config).unwrap();
    init.copy_into(&store).unwrap();

    // Grey pixels in [0, 1] from the reference's first channel.
    let x = candle_nn::ops::sigmoid(&r["pixel_values"].narrow(1, 0, 1).unwrap()).unwrap();
    let normalised: Vec<Tensor> = (0..3)
        .map(|c| {
            x.affine(
                1.0 / norm.std[c] as f64,
                -(norm.mean[c] / norm.std[c]) as f64,
            )
        })
        .collect::<candle_core::Result<_>>()
        .unwrap();
    let rgb_input = Tensor::cat(&normalised, 1).unwrap();
    let grey_input = x
        .affine(MODEL_INPUT_SCALE as f64, MODEL_INPUT_SHIFT as f64)
        .unwrap();
    let expected = rgb.forward(&patches(&rgb_input, 8), None).unwrap();
    let got = grey.forward(&patches(&grey_input, 8), None).unwrap();
    assert_close("folded grey input", &got.last, &expected.last, None);
    assert_close(
        "folded grey input, layer 1",
        &got.blocks[0],
        &expected.blocks[0],
        None,
    );
}

/// Runs `mask` (patch 8) and `pretrain` with `init` for 0 steps on the SynthRad `ci` ingest; the
/// pipeline folder (the stage's work dir) is `root/out`.
fn pretrain_with_init(root: &Path, init: serde_json::Value) -> Result<PathBuf, String> {
    pretrain_on(common::ci_ingest_dir(), root, init)
}

/// [`pretrain_with_init`] on the ingest artifact in `ingest_dir`.
fn pretrain_on(ingest_dir: &Path, root: &Path, init: serde_json::Value) -> Result<PathBuf, String> {
    use std::sync::atomic::AtomicBool;
    use umdflow_model::PretrainKind;
    use umdflow_stages::NoProgress;
    let ingest = common::input("prep", "ingest", ingest_dir);
    let mask = serde_json::json!({"epochs": 1, "patch_size": 8, "seed": 4});
    let inputs = common::mask_inputs(ingest, &root.join("mask"), mask);
    let out = root.join("out");
    common::run_stage(
        &PretrainKind,
        serde_json::json!({"max_steps": 0, "batch_size": 8, "device": "cpu", "init": init}),
        &inputs,
        &out,
        &NoProgress,
        &AtomicBool::new(false),
    )
    .map_err(|e| e.to_string())?;
    Ok(out)
}

#[test]
fn pretrain_starts_its_image_encoder_from_a_clip_folder_relative_to_the_pipeline() {
    let tmp = tempfile::tempdir().unwrap();
    let clip = tmp.path().join("weights/clip");
    std::fs::create_dir_all(&clip).unwrap();
    for file in [
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
    ] {
        std::fs::copy(fixture("clip-vit").join(file), clip.join(file)).unwrap();
    }
    let out = pretrain_with_init(tmp.path(), serde_json::json!({"image": "../weights/clip"}))
        .expect("pretrain with a CLIP init");
    let (store, _, info) = umdflow_model::checkpoint::load_checkpoint(&out, &Device::Cpu).unwrap();
    let m = &info.model;
    assert_eq!(
        (
            m.vision_width,
            m.vision_layers,
            m.vision_heads,
            m.vision_mlp
        ),
        (32, 2, 4, 64)
    );
    assert_eq!(
        (m.channels, m.patch_size, m.vision_norm_eps),
        (1, 8, Some(1e-5))
    );

    // The checkpoint holds the folded CLIP weights, exactly (0 training steps).
    let data = common::ci_dataset();
    let folders = umdflow_model::pretrained::InitFolders {
        image: Some(&clip),
        ..Default::default()
    };
    let expected =
        umdflow_model::pretrained::load_for_data(&folders, &data, 8, &Device::Cpu).unwrap();
    // class token, patch embedding, positions, ln_pre, ln_post and two blocks of 16 tensors.
    assert_eq!(expected[0].tensors.len(), 3 + 2 + 2 + 2 * 16);
    for (name, tensor) in &expected[0].tensors {
        let saved = store.param(name).expect(name).var.as_tensor().clone();
        assert_eq!(max_abs_diff(&saved, tensor, None), 0.0, "{name}");
    }
}

/// A SynthRad `ci` ingest of `max_len`-token texts tokenized with the fixture `name`'s
/// `tokenizer.json`.
fn ingest_with_tokenizer(root: &Path, name: &str, max_len: usize) -> PathBuf {
    let dir = root.join(format!("ingest-{name}-{max_len}"));
    common::run_stage(
        &umdflow_data::IngestKind,
        serde_json::json!({
            "source": "synthrad", "preset": "ci", "seed": 1, "max_len": max_len,
            "tokenizer": fixture(name).join("tokenizer.json").display().to_string(),
        }),
        &[],
        &dir,
        &umdflow_stages::NoProgress,
        &std::sync::atomic::AtomicBool::new(false),
    )
    .expect("ingest with a given tokenizer");
    dir
}

#[test]
fn pretrain_starts_both_encoders_on_an_ingest_tokenized_with_the_text_encoders_tokenizer() {
    let tmp = tempfile::tempdir().unwrap();
    let ingest = ingest_with_tokenizer(tmp.path(), "roberta", 12);
    let data = umdflow_data::artifact::Dataset::load(&ingest).unwrap();
    assert_eq!(data.meta.vocab_size, 400);
    assert_eq!(data.input_ids[0], 0, "rows start with RoBERTa's <s>");
    let (image, text) = (fixture("clip-vit"), fixture("roberta"));
    let out = pretrain_on(
        &ingest,
        tmp.path(),
        serde_json::json!({"image": image.display().to_string(), "text": text.display().to_string()}),
    )
    .expect("pretrain from CLIP and RoBERTa");
    let (store, _, info) = umdflow_model::checkpoint::load_checkpoint(&out, &Device::Cpu).unwrap();
    assert_eq!(
        (info.model.vocab_size, info.model.text_norm_eps),
        (400, Some(1e-5))
    );
    let folders = umdflow_model::pretrained::InitFolders {
        image: Some(&image),
        text: Some(&text),
        ..Default::default()
    };
    let expected =
        umdflow_model::pretrained::load_for_data(&folders, &data, 8, &Device::Cpu).unwrap();
    for (name, tensor) in expected.iter().flat_map(|e| &e.tensors) {
        let saved = store.param(name).expect(name).var.as_tensor().clone();
        assert_eq!(max_abs_diff(&saved, tensor, None), 0.0, "{name}");
    }
}

#[test]
fn a_text_init_whose_tokenizer_the_ingest_did_not_use_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let roberta = fixture("roberta").display().to_string();
    // The SynthRad ingest's own WordPiece, and BERT's, are not RoBERTa's vocabulary.
    for ingest in [
        common::ci_ingest_dir().to_path_buf(),
        ingest_with_tokenizer(tmp.path(), "bert", 12),
    ] {
        let err =
            pretrain_on(&ingest, tmp.path(), serde_json::json!({"text": roberta})).unwrap_err();
        assert!(
            err.contains("init.text: the ingest tokenized with another vocabulary")
                && err.contains("roberta/tokenizer.json (400 tokens)"),
            "{err}"
        );
    }
    assert!(!tmp.path().join("out/checkpoint.safetensors").exists());
}

#[test]
fn a_text_init_with_too_few_positions_for_the_ingest_is_refused_before_training() {
    let tmp = tempfile::tempdir().unwrap();
    // The fixture RoBERTa has 18 position rows, of which the first 2 precede the first token.
    let ingest = ingest_with_tokenizer(tmp.path(), "roberta", 20);
    let err = pretrain_on(
        &ingest,
        tmp.path(),
        serde_json::json!({"text": fixture("roberta").display().to_string()}),
    )
    .unwrap_err();
    assert!(
        err.contains("init: ") && err.contains("texts of 20 tokens need 22 position rows"),
        "{err}"
    );
    assert!(!tmp.path().join("out/checkpoint.safetensors").exists());
}
