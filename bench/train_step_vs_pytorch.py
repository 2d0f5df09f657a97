"""A PyTorch mirror of one MR-Pretrain training step of umdflow's model, for side-by-side timing.

Mirrors `stages/model/src/{model,objective,losses,optim,train}.rs` for the `tiny` and `small`
presets on SynthRad `ci` shapes (batch 32, 32x32 grey images cut into 16 patches of 8x8 of which
4 stay visible, 64 tokens, vocabulary 400): the unmasked encoders, the EMA target pass, the MIM
pass (visible patches, fusion up to `mim_layer`, MAE decoder), the MLM pass (corrupted text, full
fusion, MLM and FeaMLM heads), the ITM pass, all five losses, backward, global-norm clipping,
AdamW with M3AE's parameter groups (heads and `multi_modal` x5, no decay on biases and norms) and
the EMA update. As umdflow's model (layers.rs `RealRows`), the text stream's row-wise work runs on
its real (non-padding) rows only: the MLPs, the attention's output projection, and in attention
at least `MIN_WIDTH_TO_SKIP_QKV` wide the queries (own stream's real rows), keys and values (the
text's real rows), with zeros scattered into the padding rows. `--skip-padding mlp` skips the MLPs only (umdflow's step from 6f379a3 to the change after
9df9b07), `--skip-padding none` nothing (before 6f379a3; `--padded-mlp` is the same). Only the
timing is compared; the values are random, not umdflow's.

Run by `bench/train_step_vs_pytorch.sh` with /work/venv-torch/bin/python (torch is never needed by
umdflow's tests or CI). Prints one line `median_ms=<ms> steps=<n>` (and the per-step times and
losses).

    python bench/train_step_vs_pytorch.py --preset small --threads 2 --steps 8 [--compile]
"""

import argparse
import math
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

# (vision w, layers, heads, mlp, text w, layers, heads, mlp, fusion w, layers, heads, mlp,
#  decoder w, layers, heads, mlp, mim_layer) -- config.rs `ModelConfig::preset`
PRESETS = {
    "tiny": [32, 2, 2, 64, 32, 2, 2, 64, 32, 2, 2, 64, 32, 1, 2, 64, 1],
    "small": [256, 4, 4, 1024, 256, 4, 4, 1024, 256, 2, 4, 1024, 128, 2, 4, 512, 1],
}
HEAD_PREFIXES = ("mim_head.", "mlm_head.", "itm_head.", "feamim_head.", "feamlm_head.")
TARGET_PREFIXES = ("vision_encoder.", "language_encoder.", "multi_modal_vision_proj.",
                   "multi_modal_language_proj.")
EPS = 1e-5
MASKED_KEY_BIAS = -10_000.0
# Whether the attention projections skip padding rows (`--skip-padding all`); set by main().
SKIP_ATTENTION_PADDING = True
MIN_WIDTH_TO_SKIP_QKV = 128  # layers.rs


def quick_gelu(x):
    return x * torch.sigmoid(1.702 * x)


class Attention(nn.Module):
    def __init__(self, width, heads):
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(width, width) for _ in range(4))
        self.heads = heads

    def attend(self, q, k, v, key_bias):
        """Attention of projected queries, keys and values; the output before `o`."""
        b, s, w = q.shape
        sk = k.shape[1]
        h, dh = self.heads, w // self.heads
        q = q.view(b, s, h, dh).transpose(1, 2)
        k = k.view(b, sk, h, dh).transpose(1, 2)
        v = v.view(b, sk, h, dh).transpose(1, 2)
        scores = q @ k.transpose(-1, -2) * (1.0 / math.sqrt(dh))
        if key_bias is not None:
            scores = scores + key_bias
        return (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, s, w)

    def forward(self, x, context, key_bias):
        return self.o(self.attend(self.q(x), self.k(context), self.v(context), key_bias))

    def add_to(self, residual, x, rows, context, context_rows, key_bias):
        """layers.rs `Attention::add_to`: `residual + forward(x, context)`, the projections on real rows."""
        if not SKIP_ATTENTION_PADDING:
            return residual + self.forward(x, context, key_bias)
        q_rows, kv_rows = (rows, context_rows) if x.shape[-1] >= MIN_WIDTH_TO_SKIP_QKV else (None, None)
        picked = pick(x, q_rows)
        picked_context = picked if context is x and kv_rows is q_rows else pick(context, kv_rows)
        q = project(self.q, x, picked, q_rows)
        k = project(self.k, context, picked_context, kv_rows)
        v = project(self.v, context, picked_context, kv_rows)
        return plus_on_rows(residual, self.attend(q, k, v, key_bias), rows, self.o)


class Mlp(nn.Module):
    def __init__(self, width, hidden, act):
        super().__init__()
        self.fc1, self.fc2, self.act = nn.Linear(width, hidden), nn.Linear(hidden, width), act

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


def pick(x, rows):
    """layers.rs `OnRows::pick`: the rows `rows` of a [B, S, W] stream as [N, W]."""
    return None if rows is None else x.reshape(-1, x.shape[-1]).index_select(0, rows)


def project(linear, x, picked, rows):
    """layers.rs `OnRows::project`: `linear` on the picked rows, zeros in the others."""
    if rows is None:
        return linear(x)
    y = linear(picked)
    b, s, _ = x.shape
    return y.new_zeros(b * s, y.shape[1]).index_add(0, rows, y).view(b, s, -1)


def plus_on_rows(x, source, rows, f):
    """layers.rs `plus_on_rows`: `x + f(source)` with the row-wise `f` computed on `rows` only."""
    if rows is None:
        return x + f(source)
    return x.reshape(-1, x.shape[-1]).index_add(0, rows, f(pick(source, rows))).reshape(x.shape)


class Block(nn.Module):
    """layers.rs `Block`: pre-LN (ViT, decoder) or post-LN (BERT)."""

    def __init__(self, width, heads, hidden, act, pre_norm):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(width, eps=EPS), nn.LayerNorm(width, eps=EPS)
        self.attn, self.mlp, self.pre_norm = Attention(width, heads), Mlp(width, hidden, act), pre_norm

    def forward(self, x, key_bias=None, rows=None):
        if self.pre_norm:
            h = self.ln1(x)
            x = self.attn.add_to(x, h, rows, h, rows, key_bias)
            return plus_on_rows(x, x, rows, lambda x: self.mlp(self.ln2(x)))
        x = self.ln1(self.attn.add_to(x, x, rows, x, rows, key_bias))
        return self.ln2(plus_on_rows(x, x, rows, self.mlp))


class CoAttentionLayer(nn.Module):
    def __init__(self, width, heads, hidden):
        super().__init__()
        self.self_attn, self.cross_attn = Attention(width, heads), Attention(width, heads)
        self.ln_self, self.ln_cross, self.ln_out = (nn.LayerNorm(width, eps=EPS) for _ in range(3))
        self.mlp = Mlp(width, hidden, F.gelu)

    def forward(self, x, own_bias, own_rows, other, other_bias, other_rows):
        x = self.ln_self(self.self_attn.add_to(x, x, own_rows, x, own_rows, own_bias))
        x = self.ln_cross(self.cross_attn.add_to(x, x, own_rows, other, other_rows, other_bias))
        return self.ln_out(plus_on_rows(x, x, own_rows, self.mlp))


class VisionEncoder(nn.Module):
    def __init__(self, c, patches, patch_dim):
        super().__init__()
        w = c["vw"]
        self.patch_embed = nn.Linear(patch_dim, w, bias=False)
        self.class_embedding = nn.Parameter(torch.randn(w) * 0.02)
        self.positional_embedding = nn.Parameter(torch.randn(patches + 1, w) * 0.02)
        self.ln_pre, self.ln_post = nn.LayerNorm(w, eps=EPS), nn.LayerNorm(w, eps=EPS)
        self.blocks = nn.ModuleList(Block(w, c["vh"], c["vm"], quick_gelu, True) for _ in range(c["vl"]))

    def forward(self, patches, keep=None):
        b, l, _ = patches.shape
        x = self.patch_embed(patches) + self.positional_embedding[1:l + 1]
        if keep is not None:
            x = x.gather(1, keep.unsqueeze(2).expand(b, keep.shape[1], x.shape[2]))
        cls = (self.class_embedding + self.positional_embedding[0]).expand(b, 1, -1)
        x = self.ln_pre(torch.cat([cls, x], 1))
        for block in self.blocks:
            x = block(x)
        return self.ln_post(x)


class TextEncoder(nn.Module):
    def __init__(self, c, vocab, max_len):
        super().__init__()
        w = c["tw"]
        self.word_embeddings = nn.Embedding(vocab, w)
        self.position_embeddings = nn.Embedding(max_len, w)
        self.ln_embed = nn.LayerNorm(w, eps=EPS)
        self.blocks = nn.ModuleList(Block(w, c["th"], c["tm"], F.gelu, False) for _ in range(c["tl"]))

    def forward(self, ids, key_bias, rows):
        x = self.ln_embed(self.word_embeddings(ids) + self.position_embeddings.weight[: ids.shape[1]])
        for block in self.blocks:
            x = block(x, key_bias, rows)
        return x


def sincos_2d(width, grid):
    half, quarter = width // 2, width // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    out = torch.zeros(1 + grid * grid, width)
    for row in range(grid):
        for col in range(grid):
            for part, coord in ((0, col), (1, row)):
                base = part * half
                out[1 + row * grid + col, base:base + quarter] = torch.sin(coord * omega).float()
                out[1 + row * grid + col, base + quarter:base + half] = torch.cos(coord * omega).float()
    return out


class MimDecoder(nn.Module):
    def __init__(self, c, patches, patch_dim, grid):
        super().__init__()
        w = c["dw"]
        self.embed = nn.Linear(c["fw"], w)
        self.mask_token = nn.Parameter(torch.randn(w) * 0.02)
        self.register_buffer("positions", sincos_2d(w, grid))
        self.blocks = nn.ModuleList(Block(w, c["dh"], c["dm"], quick_gelu, True) for _ in range(c["dl"]))
        self.norm = nn.LayerNorm(w, eps=EPS)
        self.pixel = nn.Linear(w, patch_dim)

    def decode(self, image, restore):
        x = self.embed(image)
        b, s, w = x.shape
        l = restore.shape[1]
        pool = torch.cat([x[:, 1:], self.mask_token.expand(b, 1, w)], 1)
        full = pool.gather(1, restore.unsqueeze(2).expand(b, l, w))
        x = torch.cat([x[:, :1], full], 1) + self.positions[: l + 1]
        for block in self.blocks:
            x = block(x)
        return self.norm(x)[:, 1:]


class Model(nn.Module):
    def __init__(self, c, patches, patch_dim, grid, vocab, max_len):
        super().__init__()
        f = c["fw"]
        self.vision_encoder = VisionEncoder(c, patches, patch_dim)
        self.language_encoder = TextEncoder(c, vocab, max_len)
        self.multi_modal_vision_proj = nn.Linear(c["vw"], f)
        self.multi_modal_language_proj = nn.Linear(c["tw"], f)
        self.modality_type_embeddings = nn.Embedding(2, f)
        self.multi_modal_vision_layers = nn.ModuleList(CoAttentionLayer(f, c["fh"], c["fm"]) for _ in range(c["fl"]))
        self.multi_modal_language_layers = nn.ModuleList(CoAttentionLayer(f, c["fh"], c["fm"]) for _ in range(c["fl"]))
        self.multi_modal_vision_pooler = nn.Linear(f, f)
        self.multi_modal_language_pooler = nn.Linear(f, f)
        self.mim_head = MimDecoder(c, patches, patch_dim, grid)
        self.mlm_head = nn.ModuleDict(dict(dense=nn.Linear(f, f), norm=nn.LayerNorm(f, eps=EPS),
                                           decoder=nn.Linear(f, vocab)))
        self.itm_head = nn.Linear(2 * f, 2)
        self.feamim_head = nn.Linear(c["dw"], f)
        self.feamlm_head = nn.ModuleDict(dict(fc1=nn.Linear(f, f), fc2=nn.Linear(f, f)))
        self.mim_layer = c["mim"]

    def fuse(self, text, text_bias, image, layers, text_rows):
        types = self.modality_type_embeddings.weight
        t = self.multi_modal_language_proj(text) + types[0]
        i = self.multi_modal_vision_proj(image) + types[1]
        images = [i]
        for k in range(layers):
            t, i = (self.multi_modal_language_layers[k](t, text_bias, text_rows, i, None, None),
                    self.multi_modal_vision_layers[k](i, None, None, t, text_bias, text_rows))
            images.append(i)
        return t, i, images


def weighted_mean(values, weights):
    weights = weights.reshape(values.shape)
    return (values * weights).sum() / weights.sum().clamp(min=1.0)


def features(x):
    return F.layer_norm(x, x.shape[-1:], eps=1e-6)


def mr_losses(model, ema, batch):
    """objective.rs `mr_losses` with every term on and EMA targets."""
    text_bias, real = batch["text_bias"], batch["text_rows"]
    vision = model.vision_encoder(batch["patches"])
    text = model.language_encoder(batch["input_ids"], text_bias, real)
    with torch.no_grad():
        image_t = features(ema.multi_modal_vision_proj(ema.vision_encoder(batch["patches"]))[:, 1:])
        text_t = features(ema.multi_modal_language_proj(ema.language_encoder(batch["input_ids"], text_bias, real)))
    # MIM pass
    visible = model.vision_encoder(batch["patches"], batch["keep"])
    _, _, images = model.fuse(text, text_bias, visible, model.mim_layer, real)
    decoded = model.mim_head.decode(images[model.mim_layer], batch["restore"])
    pixels = model.mim_head.pixel(decoded)
    mim = weighted_mean((pixels - batch["pixel_targets"]).pow(2).mean(-1), batch["removed"])
    pred = model.feamim_head(decoded)
    feamim = weighted_mean((pred - image_t).pow(2).mean(-1), batch["removed"])
    # MLM pass
    corrupted = model.language_encoder(batch["masked_ids"], text_bias, real)
    t, _, _ = model.fuse(corrupted, text_bias, vision, len(model.multi_modal_language_layers), real)
    rows = t.reshape(-1, t.shape[-1])
    h = model.mlm_head
    logits = h["decoder"](h["norm"](F.gelu(h["dense"](rows[batch["mlm_positions"]]))))
    mlm = F.cross_entropy(logits, batch["mlm_labels"])
    pred = model.feamlm_head["fc2"](F.gelu(model.feamlm_head["fc1"](rows)))
    feamlm = weighted_mean((pred - text_t.reshape(rows.shape)).pow(2).mean(-1), batch["mlm_weights"])
    # ITM pass
    t, i, _ = model.fuse(text, text_bias, vision[batch["itm_image"]], len(model.multi_modal_language_layers),
                       real)
    pooled = torch.cat([torch.tanh(model.multi_modal_language_pooler(t[:, 0])),
                        torch.tanh(model.multi_modal_vision_pooler(i[:, 0]))], 1)
    itm = F.cross_entropy(model.itm_head(pooled), batch["itm_labels"])
    return mim + mlm + itm + 1.0 * (feamim + feamlm)


def param_groups(model, lr):
    """optim.rs: heads and `multi_modal` x5; decay only on weights and embeddings."""
    groups = {}
    for name, p in model.named_parameters():
        mult = 5.0 if name.startswith(HEAD_PREFIXES) or "multi_modal" in name else 1.0
        is_norm = ".ln" in name or "norm" in name
        decay = name.endswith("weight") and not is_norm or name.endswith(("embedding", "mask_token"))
        groups.setdefault((mult, decay), []).append(p)
    return [dict(params=ps, lr=lr * mult, weight_decay=0.01 if decay else 0.0)
            for (mult, decay), ps in groups.items()]


def make_batch(b, l, k, p, t, vocab, gen, skip_padding):
    removed = torch.zeros(b, l)
    keep, restore = [], []
    for row in range(b):
        perm = torch.randperm(l, generator=gen)
        kept = perm[:k].sort().values
        keep.append(kept)
        r = torch.full((l,), k, dtype=torch.long)
        r[kept] = torch.arange(k)
        restore.append(r)
        removed[row] = 1.0
        removed[row, kept] = 0.0
    lengths = torch.randint(t // 4, t, (b,), generator=gen)
    mask = (torch.arange(t)[None] < lengths[:, None]).float()
    ids = torch.randint(5, vocab, (b, t), generator=gen)
    selected = (torch.rand(b, t, generator=gen) < 0.15) & (mask > 0)
    masked_ids = torch.where(selected, torch.full_like(ids, 4), ids)
    itm_image = torch.arange(b)
    itm_image[: b // 2] = torch.roll(itm_image[: b // 2], 1)
    raw = torch.rand(b, l, p, generator=gen)
    targets = (raw - raw.mean(-1, keepdim=True)) / (raw.var(-1, keepdim=True) + 1e-6).sqrt()
    return dict(patches=raw * 2 - 1, pixel_targets=targets, removed=removed, keep=torch.stack(keep),
                restore=torch.stack(restore), input_ids=ids, masked_ids=masked_ids,
                text_bias=((1 - mask) * MASKED_KEY_BIAS).view(b, 1, 1, t),
                text_rows=None if skip_padding == "none" else mask.flatten().nonzero().squeeze(1),
                mlm_weights=selected.float(), mlm_positions=selected.flatten().nonzero().squeeze(1),
                mlm_labels=ids.flatten()[selected.flatten()], itm_image=itm_image,
                itm_labels=(itm_image == torch.arange(b)).long())


def timed(f):
    start = time.perf_counter()
    f()
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8, help="measured steps (after 2 warm-up steps)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the loss function")
    parser.add_argument("--skip-padding", choices=("all", "mlp", "none"), default="all",
                        help="the text stream's row-wise work that skips padding rows: all of it "
                        "(umdflow's step), the MLPs only, or none")
    parser.add_argument("--padded-mlp", action="store_true",
                        help="the same as --skip-padding none (the flag of session 14)")
    parser.add_argument("--ceiling", action="store_true",
                        help="only print the best-of-5 GFLOP/s of a 2048^3 f32 matrix product")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.ceiling:
        a, b = torch.ones(2048, 2048), torch.ones(2048, 2048)
        a @ b
        best = min(timed(lambda: a @ b) for _ in range(5))
        print(f"ceiling_gflops={2 * 2048 ** 3 / best / 1e9:.1f}")
        return
    torch.manual_seed(0)
    keys = ["vw", "vl", "vh", "vm", "tw", "tl", "th", "tm", "fw", "fl", "fh", "fm", "dw", "dl", "dh", "dm", "mim"]
    c = dict(zip(keys, PRESETS[args.preset]))
    b, size, patch, t, vocab = 32, 32, 8, 64, 400
    grid = size // patch
    l, p = grid * grid, patch * patch
    model = Model(c, l, p, grid, vocab, t)
    for name, param in model.named_parameters():  # M3AE's normal(0, 0.02) init, as umdflow's default
        if param.dim() == 2:
            nn.init.normal_(param, std=0.02)
    ema = Model(c, l, p, grid, vocab, t)
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)
    online_targets = [p for n, p in model.named_parameters() if n.startswith(TARGET_PREFIXES)]
    ema_targets = [p for n, p in ema.named_parameters() if n.startswith(TARGET_PREFIXES)]
    optimiser = torch.optim.AdamW(param_groups(model, 1e-4), betas=(0.9, 0.98), eps=1e-8)
    loss_fn = torch.compile(mr_losses) if args.compile else mr_losses
    gen = torch.Generator().manual_seed(0)
    if args.padded_mlp:
        args.skip_padding = "none"
    global SKIP_ATTENTION_PADDING
    SKIP_ATTENTION_PADDING = args.skip_padding == "all"
    batches = [make_batch(b, l, l // 4, p, t, vocab, gen, args.skip_padding) for _ in range(4)]
    times, losses = [], []
    for step in range(args.steps + 2):
        start = time.perf_counter()
        loss = loss_fn(model, ema, batches[step % len(batches)])
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()
        with torch.no_grad():
            torch._foreach_mul_(ema_targets, 0.999)
            torch._foreach_add_(ema_targets, online_targets, alpha=0.001)
        losses.append(loss.item())
        if not math.isfinite(losses[-1]):
            raise SystemExit(f"non-finite loss at step {step}")
        times.append(time.perf_counter() - start)
    measured = times[2:]
    print("step_ms=" + ",".join(f"{s * 1e3:.1f}" for s in measured))
    # The losses differ between --skip-padding modes by rounding only (a check of the skipping).
    print("losses=" + ",".join(f"{x:.6f}" for x in losses))
    print(f"median_ms={statistics.median(measured) * 1e3:.1f} steps={len(measured)}")


if __name__ == "__main__":
    main()
