//! Model sizes, all chosen at run time.
//!
//! The presets follow M3AE's layout (ViT image encoder, BERT-style text encoder, two stacks of
//! co-attention fusion layers, a MAE decoder); `base` has M3AE's sizes, `small` and `tiny` shrink
//! every width and depth so they train on a CPU.

use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};

/// How the ViT encodes patch positions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VisionPositions {
    /// A learned table initialised from N(0, 0.02) (CLIP's, which M3AE fine-tunes from).
    #[default]
    Learned,
    /// MAE's fixed 2-D sin-cos table (zero row for the class token); not a parameter, never
    /// trained.
    Sincos,
}

/// The activation inside the ViT's MLPs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VisionActivation {
    /// CLIP's `x · σ(1.702 x)` (M3AE's image encoder).
    #[default]
    QuickGelu,
    /// The exact (erf) GELU of the plain ViT (`google/vit-*`).
    Gelu,
}

impl VisionActivation {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// How new weight matrices are drawn (embedding tables are N(0, 0.02) under both).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightInit {
    /// N(0, 0.02) for every weight: BERT's, ViLT's and M3AE's `init_weights`, made for width 768.
    /// At width 32 it is about 9 times smaller than 1/sqrt(width), so the patch projection's output
    /// is drowned by the position table and the layers pass little signal at the start.
    #[default]
    Normal,
    /// Xavier-uniform (bound sqrt(6 / (fan_in + fan_out))) for every linear weight and the patch
    /// projection: MAE's initialisation, which scales with the width.
    Xavier,
}

/// Every size of the UMD model. Saved beside each checkpoint as `model_config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Image side in pixels (square images).
    pub image_size: usize,
    /// Image channels (1 for grey).
    pub channels: usize,
    /// Patch side in pixels; must divide `image_size`.
    pub patch_size: usize,
    pub vision_width: usize,
    /// Number of ViT blocks actually built (M3AE builds 11 of CLIP's 12).
    pub vision_layers: usize,
    pub vision_heads: usize,
    pub vision_mlp: usize,
    pub vocab_size: usize,
    pub max_len: usize,
    pub text_width: usize,
    pub text_layers: usize,
    pub text_heads: usize,
    pub text_mlp: usize,
    /// Width of the projections, the fusion layers, the poolers and the MLM head.
    pub fusion_width: usize,
    /// Co-attention layers per stream.
    pub fusion_layers: usize,
    pub fusion_heads: usize,
    pub fusion_mlp: usize,
    pub decoder_width: usize,
    pub decoder_layers: usize,
    pub decoder_heads: usize,
    pub decoder_mlp: usize,
    /// The MIM decoder reads the image stream after this many fusion layers (M3AE: 3 of 6).
    pub mim_layer: usize,
    /// Layer-norm epsilon (M3AE uses 1e-5 for CLIP parts and 1e-12 for BERT parts; one value here
    /// unless an encoder's own value is set below).
    pub norm_eps: f64,
    /// The image encoder's layer-norm epsilon when it differs from `norm_eps` (set from a
    /// pretrained encoder's `config.json`; absent otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vision_norm_eps: Option<f64>,
    /// The text encoder's layer-norm epsilon when it differs from `norm_eps` (BERT's 1e-12).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_norm_eps: Option<f64>,
    /// The ViT's position embeddings (absent in configs saved before the choice existed:
    /// learned).
    #[serde(default)]
    pub vision_positions: VisionPositions,
    /// How the weights were first drawn (absent in configs saved before the choice existed:
    /// normal). Kept so that heads added later (fine-tuning) are drawn the same way.
    #[serde(default)]
    pub weight_init: WeightInit,
    /// The ViT's patch embedding has a bias (the plain ViT's; CLIP's has none). Written only when
    /// true, so CLIP-layout models keep their `model_config.json` byte for byte.
    #[serde(default, skip_serializing_if = "is_false")]
    pub vision_patch_bias: bool,
    /// The ViT normalises its embeddings before the first block (`ln_pre`, CLIP's; the plain ViT
    /// has none). Written only when false.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub vision_ln_pre: bool,
    /// The ViT MLPs' activation. Written only when not CLIP's `quick_gelu`.
    #[serde(default, skip_serializing_if = "VisionActivation::is_default")]
    pub vision_activation: VisionActivation,
}

/// Serde's default for fields that are true unless a file says otherwise.
fn yes() -> bool {
    true
}

fn is_true(value: &bool) -> bool {
    *value
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// The named size presets.
pub const PRESETS: [&str; 3] = ["tiny", "small", "base"];

impl ModelConfig {
    /// The widths and depths of a preset; image and vocabulary sizes come from the data.
    pub fn preset(
        name: &str,
        image_size: usize,
        channels: usize,
        patch_size: usize,
        vocab_size: usize,
        max_len: usize,
    ) -> Result<Self> {
        // (vision w, layers, heads, mlp, text w, layers, heads, mlp, fusion w, layers, heads, mlp,
        //  decoder w, layers, heads, mlp, mim_layer)
        let s: [usize; 17] = match name {
            "tiny" => [32, 2, 2, 64, 32, 2, 2, 64, 32, 2, 2, 64, 32, 1, 2, 64, 1],
            "small" => [
                256, 4, 4, 1024, 256, 4, 4, 1024, 256, 2, 4, 1024, 128, 2, 4, 512, 1,
            ],
            "base" => [
                768, 11, 12, 3072, 768, 12, 12, 3072, 768, 6, 12, 3072, 384, 4, 6, 1536, 3,
            ],
            other => {
                return Err(ModelError::Config(format!(
                    "unknown model preset `{other}`; expected one of {}",
                    PRESETS.join(", ")
                )));
            }
        };
        let config = ModelConfig {
            image_size,
            channels,
            patch_size,
            vision_width: s[0],
            vision_layers: s[1],
            vision_heads: s[2],
            vision_mlp: s[3],
            vocab_size,
            max_len,
            text_width: s[4],
            text_layers: s[5],
            text_heads: s[6],
            text_mlp: s[7],
            fusion_width: s[8],
            fusion_layers: s[9],
            fusion_heads: s[10],
            fusion_mlp: s[11],
            decoder_width: s[12],
            decoder_layers: s[13],
            decoder_heads: s[14],
            decoder_mlp: s[15],
            mim_layer: s[16],
            norm_eps: 1e-5,
            vision_norm_eps: None,
            text_norm_eps: None,
            vision_positions: VisionPositions::Learned,
            weight_init: WeightInit::Normal,
            vision_patch_bias: false,
            vision_ln_pre: true,
            vision_activation: VisionActivation::QuickGelu,
        };
        config.validate()?;
        Ok(config)
    }

    /// The image encoder's layer-norm epsilon.
    pub fn vision_eps(&self) -> f64 {
        self.vision_norm_eps.unwrap_or(self.norm_eps)
    }

    /// The text encoder's layer-norm epsilon.
    pub fn text_eps(&self) -> f64 {
        self.text_norm_eps.unwrap_or(self.norm_eps)
    }

    /// Patches per image side.
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// Patches per image.
    pub fn num_patches(&self) -> usize {
        self.grid() * self.grid()
    }

    /// Values per patch (`patch_size² · channels`), the MAE decoder's output width.
    pub fn patch_dim(&self) -> usize {
        self.patch_size * self.patch_size * self.channels
    }

    /// Checks that the sizes fit together.
    pub fn validate(&self) -> Result<()> {
        let fail = |m: String| Err(ModelError::Config(m));
        if self.patch_size == 0
            || self.image_size == 0
            || !self.image_size.is_multiple_of(self.patch_size)
        {
            return fail(format!(
                "patch_size {} must be positive and divide image_size {}",
                self.patch_size, self.image_size
            ));
        }
        if self.channels == 0 || self.vocab_size == 0 || self.max_len < 2 {
            return fail("channels and vocab_size must be positive and max_len at least 2".into());
        }
        for (what, width, heads) in [
            ("vision", self.vision_width, self.vision_heads),
            ("text", self.text_width, self.text_heads),
            ("fusion", self.fusion_width, self.fusion_heads),
            ("decoder", self.decoder_width, self.decoder_heads),
        ] {
            if heads == 0 || width == 0 || width % heads != 0 {
                return fail(format!(
                    "{what}_width {width} must be a positive multiple of {what}_heads {heads}"
                ));
            }
        }
        if !self.decoder_width.is_multiple_of(4) {
            return fail(format!(
                "decoder_width {} must be a multiple of 4 (2-D sin-cos positions)",
                self.decoder_width
            ));
        }
        if self.vision_positions == VisionPositions::Sincos && !self.vision_width.is_multiple_of(4)
        {
            return fail(format!(
                "vision_width {} must be a multiple of 4 for sin-cos positions",
                self.vision_width
            ));
        }
        if self.fusion_layers == 0 || self.mim_layer > self.fusion_layers {
            return fail(format!(
                "mim_layer {} must lie in 0..={} (fusion_layers, which must be positive)",
                self.mim_layer, self.fusion_layers
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_validate_and_unknown_names_fail() {
        for name in PRESETS {
            ModelConfig::preset(name, 32, 1, 8, 100, 16).unwrap();
        }
        let err = ModelConfig::preset("huge", 32, 1, 8, 100, 16)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown model preset `huge`"), "{err}");
        let err = ModelConfig::preset("tiny", 30, 1, 8, 100, 16)
            .unwrap_err()
            .to_string();
        assert!(err.contains("divide image_size"), "{err}");
    }

    #[test]
    fn the_plain_vit_switches_are_written_only_when_set_and_default_when_absent() {
        let clip = ModelConfig::preset("tiny", 32, 1, 8, 100, 16).unwrap();
        let text = serde_json::to_string(&clip).unwrap();
        for field in ["vision_patch_bias", "vision_ln_pre", "vision_activation"] {
            assert!(!text.contains(field), "{field} in {text}");
        }
        // A file saved before the switches existed reads as the CLIP layout.
        assert_eq!(serde_json::from_str::<ModelConfig>(&text).unwrap(), clip);

        let vit = ModelConfig {
            vision_patch_bias: true,
            vision_ln_pre: false,
            vision_activation: VisionActivation::Gelu,
            ..clip
        };
        let text = serde_json::to_string(&vit).unwrap();
        assert!(
            text.contains("\"vision_patch_bias\":true")
                && text.contains("\"vision_ln_pre\":false")
                && text.contains("\"vision_activation\":\"gelu\""),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<ModelConfig>(&text).unwrap(), vit);
    }
}
