//! Pretrained encoders from Hugging Face folders: umdflow's encoders, given the weights of tiny
//! random `CLIPVisionModel`, `ViTModel`, `RobertaModel` and `BertModel`s saved by `transformers`,
//! compute what
//! the Python models computed on the same inputs (to 1e-4), and a file that does not fit the layout
//! is refused with every offending tensor named.
//!
//! The fixtures are made by `scripts/make-hf-fixtures.py` (torch and transformers are not needed
//! here).

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use umdflow_model::config::{ModelConfig, VisionActivation};
use umdflow_model::model::encoders::{TextEncoder, VisionEncoder};
use umdflow_model::ops;
use umdflow_model::pretrained::{
    CLIP_MEAN, EncoderInit, ImageFamily, ImageNormalization, MODEL_INPUT_SCALE, MODEL_INPUT_SHIFT,
    VIT_MEAN, VIT_STD, load_image_encoder, load_text_encoder,
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
    encoder_of("clip-vit", image_size, layers)
}

/// umdflow's ViT holding the image-encoder fixture `name`'s weights.
fn encoder_of(
    name: &str,
    image_size: usize,
    layers: Option<usize>,
) -> (VisionEncoder, ModelConfig) {
    let init = load_image_encoder(&fixture(name), image_size, layers, &Device::Cpu)
        .expect("the fixture loads");
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

#[test]
fn plain_vit_matches_transformers_on_the_same_pixels() {
    let r = reference("vit");
    let (encoder, config) = encoder_of("vit", 16, None);
    assert_eq!(
        (
            config.vision_width,
            config.vision_layers,
            config.vision_heads,
            config.vision_mlp
        ),
        (16, 2, 2, 32)
    );
    assert_eq!((config.patch_size, config.channels), (4, 3));
    // The plain ViT's parts: a patch bias, no `ln_pre`, exact GELU, epsilon 1e-12.
    assert!(config.vision_patch_bias && !config.vision_ln_pre);
    assert_eq!(config.vision_activation, VisionActivation::Gelu);
    assert_eq!(config.vision_norm_eps, Some(1e-12));
    assert!(encoder.patch_bias.is_some() && encoder.ln_pre.is_none());
    let x = patches(&r["pixel_values"], 4);

    // The embeddings' output (the first block's input: no `ln_pre`), with the patch bias.
    let (b, l, _) = x.dims3().unwrap();
    let w = config.vision_width;
    let tokens = ops::linear(&x, &encoder.patch_embed, encoder.patch_bias.as_ref())
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
    assert_close("ViT embeddings", &embeddings, &r["embeddings"], None);

    let out = encoder.forward(&x, None).unwrap();
    assert_close("ViT layer 1", &out.blocks[0], &r["hidden_states.1"], None);
    assert_close("ViT layer 2", &out.blocks[1], &r["hidden_states.2"], None);
    // The final `layernorm` on every token; row 0 is the class token the pooler reads.
    assert_close(
        "ViT last hidden state",
        &out.last,
        &r["last_hidden_state"],
        None,
    );
}

#[test]
fn plain_vit_positions_are_resampled_and_its_layers_cut_as_asked() {
    let r = reference("vit");
    let init = load_image_encoder(&fixture("vit"), 24, None, &Device::Cpu).unwrap();
    assert_close(
        "ViT positions at 24 px",
        &init.tensors["vision_encoder.positional_embedding"],
        &r["positions_24"],
        None,
    );
    let (encoder, _) = encoder_of("vit", 24, None);
    let out = encoder
        .forward(&patches(&r["pixel_values_24"], 4), None)
        .unwrap();
    assert_close("ViT at 24 px", &out.last, &r["last_hidden_state_24"], None);

    let (encoder, config) = encoder_of("vit", 16, Some(1));
    assert_eq!(config.vision_layers, 1);
    let out = encoder
        .forward(&patches(&r["pixel_values"], 4), None)
        .unwrap();
    assert_close(
        "ViT layer 1 of 1",
        &out.blocks[0],
        &r["hidden_states.1"],
        None,
    );
}

#[test]
fn a_vit_classifier_checkpoint_gives_its_encoder_and_sets_the_head_aside() {
    // `google/vit-base-patch16-224` is a ViTForImageClassification: `vit.`-prefixed tensors, a
    // `classifier`, no pooler.
    let dir = edited_copy("vit", |t| {
        let names: Vec<String> = t.keys().cloned().collect();
        for name in names {
            let tensor = t.remove(&name).unwrap();
            if !name.starts_with("pooler.") {
                t.insert(format!("vit.{name}"), tensor);
            }
        }
        let any = t["vit.layernorm.bias"].clone();
        t.insert("classifier.bias".into(), any);
    });
    let head = load_image_encoder(dir.path(), 16, None, &Device::Cpu).expect("loads");
    let bare = load_image_encoder(&fixture("vit"), 16, None, &Device::Cpu).unwrap();
    assert_eq!(head.tensors.len(), bare.tensors.len());
    for (name, tensor) in &bare.tensors {
        assert_eq!(
            max_abs_diff(&head.tensors[name], tensor, None),
            0.0,
            "{name}"
        );
    }
}

#[test]
fn a_vit_without_its_patch_bias_or_of_an_unknown_type_is_refused() {
    let missing = edited_copy("vit", |t| {
        t.remove("embeddings.patch_embeddings.projection.bias");
    });
    let err = load_image_encoder(missing.path(), 16, None, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("ViT layout")
            && err.contains(
                "missing tensor `embeddings.patch_embeddings.projection.bias` (expected shape [16])"
            ),
        "{err}"
    );

    let swin = edited_copy("vit", |_| {});
    let path = swin.path().join("config.json");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("\"vit\"", "\"swin\"")).unwrap();
    let err = load_image_encoder(swin.path(), 16, None, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("config.json")
            && err.contains("model_type `swin`")
            && err.contains("`clip_vision_model`")
            && err.contains("plain ViT (`vit`)"),
        "{err}"
    );
}

#[test]
fn a_vit_folder_without_a_preprocessor_file_is_normalised_with_vits_own_mean_and_std() {
    let bare = edited_copy("vit", |_| {});
    let fallback = ImageFamily::Vit.default_normalization();
    let norm = ImageNormalization::read(bare.path(), 3, fallback.clone()).unwrap();
    assert_eq!((norm.mean, norm.std), (VIT_MEAN.to_vec(), VIT_STD.to_vec()));
    // The fixture's own file says the same; CLIP's numbers would be wrong for a ViT.
    let norm = ImageNormalization::read(&fixture("vit"), 3, fallback).unwrap();
    assert_eq!(norm.mean, VIT_MEAN.to_vec());
}

#[test]
fn the_folded_grey_input_gives_what_the_plain_vit_computes_on_the_normalised_rgb_image() {
    let r = reference("vit");
    let (rgb, _) = encoder_of("vit", 16, None);
    let dir = fixture("vit");
    let mut init = load_image_encoder(&dir, 16, None, &Device::Cpu).unwrap();
    let norm = ImageNormalization::read(&dir, 3, ImageFamily::Vit.default_normalization()).unwrap();
    init.fold_pixel_input(1, &norm, MODEL_INPUT_SCALE, MODEL_INPUT_SHIFT)
        .unwrap();
    let config = config_for(&[&init], 16, 16);
    let mut store = ParamStore::new(&Device::Cpu, 0);
    let grey = VisionEncoder::new(&mut store, &config).unwrap();
    init.copy_into(&store).unwrap();
    let x = candle_nn::ops::sigmoid(&r["pixel_values"].narrow(1, 0, 1).unwrap()).unwrap();
    // (x − 0.5) / 0.5 on three channels.
    let rgb_input = Tensor::cat(&[&x, &x, &x], 1)
        .unwrap()
        .affine(2.0, -1.0)
        .unwrap();
    let grey_input = x
        .affine(MODEL_INPUT_SCALE as f64, MODEL_INPUT_SHIFT as f64)
        .unwrap();
    let expected = rgb.forward(&patches(&rgb_input, 4), None).unwrap();
    let got = grey.forward(&patches(&grey_input, 4), None).unwrap();
    assert_close("ViT folded grey input", &got.last, &expected.last, None);
}

/// Runs the text fixture `name` through umdflow's text encoder and compares with the reference at
/// the unpadded positions.
fn text_matches(name: &str) {
    let r = reference(name);
    let ids = r["input_ids"].to_dtype(DType::U32).unwrap();
    let mask = r["attention_mask"].to_dtype(DType::F32).unwrap();
    let (_, t) = ids.dims2().unwrap();
    let init = load_text_encoder(&fixture(name), t, &Device::Cpu).expect("the fixture loads");
    let config = config_for(&[&init], 32, t);
    let mut store = ParamStore::new(&Device::Cpu, 0);
    let encoder = TextEncoder::new(&mut store, &config).unwrap();
    init.copy_into(&store).expect("every weight fits");
    let rows = Some(&mask);

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
    text_matches("roberta");
}

#[test]
fn bert_matches_transformers_on_real_tokens() {
    // BERT's layer-norm epsilon is 1e-12 in the fixture; umdflow's default 1e-5 would be off by
    // about 1 % on the embeddings' small-variance input. Only real tokens are compared: umdflow
    // skips the MLPs on padding rows (`layers::RealRows`), whose outputs nothing reads.
    text_matches("bert");
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
    let norm =
        ImageNormalization::read(&dir, 3, ImageFamily::Clip.default_normalization()).unwrap();
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
    pretrain_patches(ingest_dir, root, 8, serde_json::json!({"init": init}))
}

/// Runs `mask` (patch `patch`) and `pretrain` for 0 steps with `extra` params on the ingest in
/// `ingest_dir`; the pipeline folder is `root/out`.
fn pretrain_patches(
    ingest_dir: &Path,
    root: &Path,
    patch: usize,
    extra: serde_json::Value,
) -> Result<PathBuf, String> {
    use std::sync::atomic::AtomicBool;
    use umdflow_model::PretrainKind;
    use umdflow_stages::NoProgress;
    let ingest = common::input("prep", "ingest", ingest_dir);
    let mask = serde_json::json!({"epochs": 1, "patch_size": patch, "seed": 4});
    let inputs = common::mask_inputs(ingest, &root.join("mask"), mask);
    let out = root.join("out");
    let mut params = serde_json::json!({"max_steps": 0, "batch_size": 8, "device": "cpu"});
    for (key, value) in extra.as_object().expect("an object of params") {
        params[key] = value.clone();
    }
    common::run_stage(
        &PretrainKind,
        params,
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

#[test]
fn pretrain_starts_from_a_plain_vit_and_its_checkpoint_rebuilds_the_same_encoder() {
    let tmp = tempfile::tempdir().unwrap();
    let vit = fixture("vit");
    let out = pretrain_patches(
        common::ci_ingest_dir(),
        tmp.path(),
        4,
        serde_json::json!({"init": {"image": vit.display().to_string()}}),
    )
    .expect("pretrain with a ViT init");
    // The checkpoint loads only into a model built from its model_config.json with the ViT's
    // parts (the loader refuses a left-over or missing tensor).
    let (store, model, info) =
        umdflow_model::checkpoint::load_checkpoint(&out, &Device::Cpu).unwrap();
    let m = &info.model;
    assert!(m.vision_patch_bias && !m.vision_ln_pre);
    assert_eq!(m.vision_activation, VisionActivation::Gelu);
    assert_eq!(
        (m.vision_width, m.vision_layers, m.patch_size, m.channels),
        (16, 2, 4, 1)
    );
    assert_eq!(m.vision_norm_eps, Some(1e-12));
    assert!(model.vision.patch_bias.is_some() && model.vision.ln_pre.is_none());
    assert!(store.param("vision_encoder.ln_pre.weight").is_none());
    let text = std::fs::read_to_string(out.join("model_config.json")).unwrap();
    assert!(
        text.contains("\"vision_patch_bias\": true")
            && text.contains("\"vision_ln_pre\": false")
            && text.contains("\"vision_activation\": \"gelu\""),
        "{text}"
    );

    // The 4x4 grid resampled to the data's 8x8, the pixels folded: exactly what the loader gives
    // (0 training steps).
    let folders = umdflow_model::pretrained::InitFolders {
        image: Some(&vit),
        ..Default::default()
    };
    let data = common::ci_dataset();
    let expected =
        umdflow_model::pretrained::load_for_data(&folders, &data, 4, &Device::Cpu).unwrap();
    // class token, patch weight and bias, positions, ln_post and two blocks of 16 tensors.
    assert_eq!(expected[0].tensors.len(), 4 + 2 + 2 * 16);
    for (name, tensor) in &expected[0].tensors {
        let saved = store.param(name).expect(name).var.as_tensor().clone();
        assert_eq!(max_abs_diff(&saved, tensor, None), 0.0, "{name}");
    }
}

/// A copy of the fixture `name` with one block more: its last block (`{blocks}{last}.…`) repeated
/// as block `last + 1`, and `num_hidden_layers` raised to match.
fn deeper_copy(name: &str, blocks: &str, last: usize) -> tempfile::TempDir {
    let dir = edited_copy(name, |t| {
        let from = format!("{blocks}{last}.");
        let copies: Vec<(String, Tensor)> = t
            .iter()
            .filter_map(|(n, tensor)| {
                let rest = n.strip_prefix(&from)?;
                Some((format!("{blocks}{}.{rest}", last + 1), tensor.clone()))
            })
            .collect();
        assert!(!copies.is_empty());
        t.extend(copies);
    });
    let path = dir.path().join("config.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let needle = format!("\"num_hidden_layers\": {}", last + 1);
    assert!(text.contains(&needle), "{text}");
    std::fs::write(
        &path,
        text.replace(&needle, &format!("\"num_hidden_layers\": {}", last + 2)),
    )
    .unwrap();
    dir
}

#[test]
fn target_layer_is_checked_against_the_loaded_encoders_depth_not_the_presets() {
    let tmp = tempfile::tempdir().unwrap();
    let clip = fixture("clip-vit").display().to_string();
    // `tiny` has 2-block encoders, so target_layer 2 passes the preset's check; the CLIP encoder
    // cut to 1 block has no block 2.
    let err = pretrain_patches(
        common::ci_ingest_dir(),
        &tmp.path().join("deep"),
        8,
        serde_json::json!({
            "init": {"image": clip, "image_layers": 1},
            "loss": {"target_layer": 2},
        }),
    )
    .unwrap_err();
    assert!(
        err.contains("loss.target_layer")
            && err.contains("got 2")
            && err.contains("the image encoder has 1 block;")
            && err.contains("the text encoder has 2 blocks"),
        "{err}"
    );
    assert!(!tmp.path().join("deep/out/checkpoint.safetensors").exists());

    // Encoders of 3 blocks from their folders: target_layer 3 is past `tiny`'s depth, and right.
    let deep_clip = deeper_copy("clip-vit", "encoder.layers.", 1);
    let deep_roberta = deeper_copy("roberta", "encoder.layer.", 1);
    let init = serde_json::json!({
        "image": deep_clip.path().display().to_string(),
        "text": deep_roberta.path().display().to_string(),
    });
    let decl_params = serde_json::json!({"init": init, "loss": {"target_layer": 3}});
    let ingest = ingest_with_tokenizer(tmp.path(), "roberta", 12);
    let out = pretrain_patches(&ingest, &tmp.path().join("three"), 8, decl_params)
        .expect("target_layer 3 of 3-block encoders");
    let (_, _, info) = umdflow_model::checkpoint::load_checkpoint(&out, &Device::Cpu).unwrap();
    assert_eq!((info.model.vision_layers, info.model.text_layers), (3, 3));
    // Without `init`, the preset's 2 blocks are what target_layer 3 is checked against.
    let err = pretrain_patches(
        &ingest,
        &tmp.path().join("preset"),
        8,
        serde_json::json!({"loss": {"target_layer": 3}}),
    )
    .unwrap_err();
    assert!(
        err.contains("got 3") && err.contains("the image encoder has 2 blocks"),
        "{err}"
    );
}
