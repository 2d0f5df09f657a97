#!/usr/bin/env python3
"""Tiny random Hugging Face models in the real layouts, with reference outputs, for umdflow's tests.

Writes `stages/model/tests/fixtures/hf/` (the folder the tests read):

- `clip-vit/`: a `CLIPVisionModel` (2 layers, width 32, 32 px images, 8 px patches) saved with
  `save_pretrained`, its `preprocessor_config.json` (CLIP's mean and std), and `reference.safetensors`:
  the input pixels, the embeddings' output, every hidden state, the last hidden state and the
  post-layer-norm of all tokens; the same model at 48 px with `interpolate_pos_encoding=True`; and
  the position table resampled to 5x5 and 6x6 patches with `torch.nn.functional.interpolate`
  (bicubic, align_corners=False, transformers' own `interpolate_pos_encoding`).
- `vit/`: a plain `ViTModel` (2 layers, width 16, 16 px images, 4 px patches, GELU, epsilon 1e-12,
  with its pooler) saved with `save_pretrained`, its `preprocessor_config.json` (mean = std = 0.5),
  and `reference.safetensors`: the input pixels, the embeddings' output, every hidden state and the
  last hidden state (after the final `layernorm`, on every token, the class token first); the same
  model at 24 px with `interpolate_pos_encoding=True`, and its position table resampled to 6x6.
- `roberta/`: a `RobertaModel` (2 layers, width 32) with a byte-level BPE `tokenizer.json` trained
  here on a few medical sentences; `bert/`: a `BertModel` with a WordPiece `tokenizer.json`. Each
  has `reference.safetensors` (input ids, attention mask, embeddings' output, every hidden state,
  last hidden state) and `tokenization.json` (sentences and the ids the Python tokenizer gives).

Run with the project's torch venv (torch, transformers, safetensors, tokenizers); tests and CI never
need it:

    /work/venv-torch/bin/python scripts/make-hf-fixtures.py

Seeded: rerunning it on the same machine with the same package versions writes identical files. On
another machine or torch build the weights and tokenizers come out identical, but the reference
outputs may differ in the last bits (about 1e-6, seen between the committed files and torch 2.15.0 on
the session-5 machine); keep the committed references unless a fixture's model itself changes.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (
    BertConfig,
    BertModel,
    CLIPVisionConfig,
    CLIPVisionModel,
    RobertaConfig,
    RobertaModel,
    ViTConfig,
    ViTModel,
)

OUT = Path(__file__).resolve().parent.parent / "stages/model/tests/fixtures/hf"
SEED = 20261202

# The tokenizers are trained on these; the tokenization fixture encodes the last four, which contain
# words, digits, units and punctuation the training text does not.
CORPUS = [
    "There is a small left pleural effusion.",
    "No pneumothorax. The heart size is normal.",
    "Patchy airspace opacity in the right lower lobe, concerning for pneumonia.",
    "Multiple pulmonary nodules are seen bilaterally.",
    "The cardiomediastinal silhouette is within normal limits.",
    "Mild cardiomegaly with pulmonary vascular congestion.",
    "No acute cardiopulmonary abnormality.",
    "Interval increase in the right pleural effusion.",
    "Degenerative changes of the thoracic spine.",
    "Endotracheal tube terminates 4 cm above the carina.",
    "Small bilateral pleural effusions with adjacent atelectasis.",
    "Is there a pneumothorax on the left side?",
    "What organ is shown in this CT scan of the abdomen?",
    "Axial T2-weighted MRI of the brain shows no mass.",
] * 4
SENTENCES = [
    "A 3.2 cm nodule in the RIGHT upper lobe; no effusion.",
    "Is the liver enlarged?",
    "Post-operative changes, e.g. sternotomy wires (x7).",
    "Résumé: hypodense lesion, ~15 mm.",
]
TEXT_LEN = 12


def main() -> None:
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    clip()
    vit()
    roberta_dir, roberta_tok = OUT / "roberta", byte_level_bpe()
    text_model(roberta_dir, roberta_tok, "roberta")
    text_model(OUT / "bert", wordpiece(), "bert")
    total = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"wrote {OUT} ({total / 1e3:.0f} kB)")


def perturb(model: torch.nn.Module, seed: int) -> None:
    """Makes every tensor distinct, so a swapped or skipped weight shows in the outputs.

    transformers initialises layer norms to (1, 0) and biases to 0; those would hide a mapping that
    swaps two norms. Linear weights get N(0, 1/fan_in) so that signals keep their size through the
    layers; embedding tables keep their N(0, 0.02), which keeps the embedding layer norm's input
    small enough for its epsilon (1e-5 vs 1e-12) to matter at the tests' 1e-4.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            noise = torch.randn(p.shape, generator=g)
            if "norm" in name.lower() and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * noise)
            elif name.endswith("bias"):
                p.copy_(0.1 * noise)
            elif p.dim() == 2 and "embedding" not in name:
                p.copy_(noise / p.shape[1] ** 0.5)
            elif p.dim() == 4:  # the patch convolution [out, in, p, p]
                p.copy_(noise / (p.shape[1] * p.shape[2] * p.shape[3]) ** 0.5)
            else:
                p.copy_(0.02 * noise)


def clip() -> None:
    out = OUT / "clip-vit"
    config = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=32,
        patch_size=8,
        num_channels=3,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
    )
    torch.manual_seed(SEED)
    model = CLIPVisionModel(config).eval()
    perturb(model, SEED + 1)
    model.save_pretrained(out)
    # What `CLIPImageProcessor.save_pretrained` writes (written by hand: the processor class needs
    # Pillow and torchvision, which the venv lacks).
    preprocessor = {
        "crop_size": {"height": 32, "width": 32},
        "do_center_crop": True,
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_processor_type": "CLIPImageProcessor",
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "resample": 3,
        "rescale_factor": 0.00392156862745098,
        "size": {"shortest_edge": 32},
    }
    (out / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2) + "\n")

    g = torch.Generator().manual_seed(SEED + 2)
    pixels = torch.randn((2, 3, 32, 32), generator=g)
    pixels_48 = torch.randn((2, 3, 48, 48), generator=g)
    ref = {"pixel_values": pixels, "pixel_values_48": pixels_48}
    with torch.no_grad():
        embeddings = model.embeddings(pixels)
        run = model(pixel_values=pixels, output_hidden_states=True)
        assert torch.equal(run.hidden_states[0], model.pre_layrnorm(embeddings))
        ref["embeddings"] = embeddings
        for k, h in enumerate(run.hidden_states):
            ref[f"hidden_states.{k}"] = h
        ref["last_hidden_state"] = run.last_hidden_state
        ref["post_layernorm"] = model.post_layernorm(run.last_hidden_state)

        run_48 = model(pixel_values=pixels_48, interpolate_pos_encoding=True, output_hidden_states=True)
        ref["last_hidden_state_48"] = run_48.last_hidden_state
        ref["post_layernorm_48"] = model.post_layernorm(run_48.last_hidden_state)
        for side in (40, 48):
            dummy = torch.zeros((1, (side // 8) ** 2 + 1, 32))
            ref[f"positions_{side}"] = model.embeddings.interpolate_pos_encoding(dummy, side, side)[0]
    save(ref, out / "reference.safetensors")


def vit() -> None:
    out = OUT / "vit"
    config = ViTConfig(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=16,
        patch_size=4,
        num_channels=3,
        hidden_act="gelu",
        layer_norm_eps=1e-12,
    )
    torch.manual_seed(SEED)
    model = ViTModel(config, add_pooling_layer=True).eval()
    perturb(model, SEED + 4)
    with torch.no_grad():
        # The plain ViT has no `ln_pre`: its first layer norm reads the embeddings as they are.
        # A small patch projection keeps their variance near 1e-3, where the ViT's epsilon 1e-12
        # and CLIP's 1e-5 differ by about 0.5 %, so a wrong epsilon shows at the tests' 1e-4.
        model.embeddings.patch_embeddings.projection.weight.mul_(0.02)
        model.embeddings.patch_embeddings.projection.bias.mul_(0.1)
    model.save_pretrained(out)
    # What `ViTImageProcessor.save_pretrained` writes (by hand, as for CLIP).
    preprocessor = {
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": [0.5, 0.5, 0.5],
        "image_processor_type": "ViTImageProcessor",
        "image_std": [0.5, 0.5, 0.5],
        "resample": 2,
        "rescale_factor": 0.00392156862745098,
        "size": {"height": 16, "width": 16},
    }
    (out / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2) + "\n")

    g = torch.Generator().manual_seed(SEED + 5)
    pixels = torch.randn((2, 3, 16, 16), generator=g)
    pixels_24 = torch.randn((1, 3, 24, 24), generator=g)
    ref = {"pixel_values": pixels, "pixel_values_24": pixels_24}
    with torch.no_grad():
        embeddings = model.embeddings(pixels)
        run = model(pixel_values=pixels, output_hidden_states=True)
        assert torch.equal(run.hidden_states[0], embeddings)
        ref["embeddings"] = embeddings
        for k, h in enumerate(run.hidden_states):
            ref[f"hidden_states.{k}"] = h
        ref["last_hidden_state"] = run.last_hidden_state

        run_24 = model(pixel_values=pixels_24, interpolate_pos_encoding=True)
        ref["last_hidden_state_24"] = run_24.last_hidden_state
        dummy = torch.zeros((1, (24 // 4) ** 2 + 1, 16))
        ref["positions_24"] = model.embeddings.interpolate_pos_encoding(dummy, 24, 24)[0]
    save(ref, out / "reference.safetensors")


def byte_level_bpe() -> Tokenizer:
    """A RoBERTa-style byte-level BPE: `<s>` 0, `<pad>` 1, `</s>` 2, `<unk>` 3, `<mask>` 4."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        min_frequency=2,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), trim_offsets=True, add_prefix_space=False)
    return tok


def wordpiece() -> Tokenizer:
    """A BERT-style WordPiece: `[PAD]` 0, `[UNK]` 1, `[CLS]` 2, `[SEP]` 3, `[MASK]` 4, lower-cased.

    The vocabulary is chosen here (`tokenizers`' WordPiece trainer breaks ties differently from run
    to run): the special tokens, every character of the corpus alone and as a `##` continuation, then
    the corpus's words by falling count (ties by spelling) up to 200 entries.
    """
    normalizer = normalizers.BertNormalizer(lowercase=True)
    pre = pre_tokenizers.BertPreTokenizer()
    counts: dict[str, int] = {}
    for text in CORPUS:
        for word, _ in pre.pre_tokenize_str(normalizer.normalize_str(text)):
            counts[word] = counts.get(word, 0) + 1
    chars = sorted({c for word in counts for c in word})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + chars + [f"##{c}" for c in chars]
    for word, _ in sorted(counts.items(), key=lambda wc: (-wc[1], wc[0])):
        if len(vocab) == 200:
            break
        if word not in vocab:
            vocab.append(word)
    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre
    tok.decoder = decoders.WordPiece()
    tok.post_processor = processors.BertProcessing(("[SEP]", 3), ("[CLS]", 2))
    return tok


def text_model(out: Path, tok: Tokenizer, kind: str) -> None:
    common = dict(
        vocab_size=tok.get_vocab_size(),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        hidden_act="gelu",
    )
    if kind == "roberta":
        # roberta-base's own settings: positions start after the padding index, one token type.
        pad = tok.token_to_id("<pad>")
        config = RobertaConfig(
            **common, max_position_embeddings=TEXT_LEN + pad + 1 + 4, type_vocab_size=1,
            pad_token_id=pad, bos_token_id=0, eos_token_id=2, layer_norm_eps=1e-5,
        )
        cls = RobertaModel
    else:
        pad = tok.token_to_id("[PAD]")
        config = BertConfig(
            **common, max_position_embeddings=TEXT_LEN + 4, type_vocab_size=2, pad_token_id=pad,
            layer_norm_eps=1e-12,
        )
        cls = BertModel
    torch.manual_seed(SEED)
    model = cls(config, add_pooling_layer=True).eval()
    perturb(model, SEED + 3)
    model.save_pretrained(out)
    tok.save(str(out / "tokenizer.json"))

    encoded = [tok.encode(s).ids for s in SENTENCES]
    rows = ",\n  ".join(json.dumps(r) for r in encoded)
    sentences = json.dumps(SENTENCES, indent=2).replace("\n", "\n  ")
    (out / "tokenization.json").write_text(f'{{\n  "sentences": {sentences},\n  "ids": [\n  {rows}\n  ]\n}}\n')

    # Row 0 fills the length; row 1 is shorter and right-padded, as umdflow pads.
    rows = [tok.encode(s).ids for s in ("Is the liver enlarged? There is a small left pleural effusion.", "No pneumothorax.")]
    ids = torch.full((2, TEXT_LEN), pad, dtype=torch.int64)
    mask = torch.zeros((2, TEXT_LEN), dtype=torch.int64)
    for r, row in enumerate(rows):
        row = row[: TEXT_LEN - 1] + [row[-1]] if len(row) > TEXT_LEN else row
        ids[r, : len(row)] = torch.tensor(row)
        mask[r, : len(row)] = 1
    assert mask[0].all() and not mask[1].all(), "the fixture wants one full and one padded row"
    ref = {"input_ids": ids, "attention_mask": mask}
    with torch.no_grad():
        run = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        ref["embeddings"] = model.embeddings(input_ids=ids)
        assert torch.equal(run.hidden_states[0], ref["embeddings"])
        for k, h in enumerate(run.hidden_states):
            ref[f"hidden_states.{k}"] = h
        ref["last_hidden_state"] = run.last_hidden_state
    save(ref, out / "reference.safetensors")


def save(tensors: dict[str, torch.Tensor], path: Path) -> None:
    save_file({k: v.detach().clone().contiguous() for k, v in sorted(tensors.items())}, str(path), metadata={"generator": "scripts/make-hf-fixtures.py"})


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
