//! Building blocks: linear layers, layer norms, multi-head attention, MLPs, transformer blocks
//! and M3AE's co-attention ("BertCrossLayer") fusion layer.

use candle_core::Tensor;

use crate::error::Result;
use crate::ops;
use crate::store::{INIT_STD, Init, ParamRole, ParamStore};

/// Additive attention bias for padding keys (BERT's convention).
pub const MASKED_KEY_BIAS: f64 = -10_000.0;

/// The narrowest attention whose query, key and value projections run on real rows only. Each
/// skip costs a gather and a scatter into zeros, which narrow products do not repay: at width 32
/// (`tiny`) skipping made the training step about 6 % slower, at 256 (`small`) about 4 % faster
/// (docs/benchmarks.md, session 15). The crossover between them was not measured.
pub const MIN_WIDTH_TO_SKIP_QKV: usize = 128;

/// `y = x Wᵀ + b`; parameters `{name}.weight` [out, in] and `{name}.bias` [out].
#[derive(Debug, Clone)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl Linear {
    pub fn new(
        store: &mut ParamStore,
        name: &str,
        input: usize,
        output: usize,
        bias: bool,
    ) -> Result<Self> {
        let weight = store.get(
            &format!("{name}.weight"),
            &[output, input],
            ParamRole::Weight,
            Init::Matrix {
                fan_in: input,
                fan_out: output,
            },
        )?;
        let bias = if bias {
            Some(store.get(
                &format!("{name}.bias"),
                &[output],
                ParamRole::Bias,
                Init::Zeros,
            )?)
        } else {
            None
        };
        Ok(Linear { weight, bias })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(ops::linear(x, &self.weight, self.bias.as_ref())?)
    }
}

/// Layer norm with `{name}.weight` (ones) and `{name}.bias` (zeros).
#[derive(Debug, Clone)]
pub struct Norm {
    pub gamma: Tensor,
    pub beta: Tensor,
    pub eps: f64,
}

impl Norm {
    pub fn new(store: &mut ParamStore, name: &str, width: usize, eps: f64) -> Result<Self> {
        Ok(Norm {
            gamma: store.get(
                &format!("{name}.weight"),
                &[width],
                ParamRole::Norm,
                Init::Ones,
            )?,
            beta: store.get(
                &format!("{name}.bias"),
                &[width],
                ParamRole::Norm,
                Init::Zeros,
            )?,
            eps,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(ops::layer_norm(
            x,
            Some(&self.gamma),
            Some(&self.beta),
            self.eps,
        )?)
    }
}

/// A learned table `{name}.weight` [rows, width].
#[derive(Debug, Clone)]
pub struct Embedding {
    pub table: Tensor,
}

impl Embedding {
    pub fn new(store: &mut ParamStore, name: &str, rows: usize, width: usize) -> Result<Self> {
        Ok(Embedding {
            table: store.get(
                &format!("{name}.weight"),
                &[rows, width],
                ParamRole::Embedding,
                Init::Normal(INIT_STD),
            )?,
        })
    }

    /// Looks up `ids` (U32, any shape) and returns [..., width].
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let mut dims = ids.dims().to_vec();
        dims.push(self.table.dim(1)?);
        Ok(self
            .table
            .index_select(&ids.flatten_all()?, 0)?
            .reshape(dims)?)
    }
}

/// The activation of an MLP.
#[derive(Debug, Clone, Copy)]
pub enum Activation {
    Gelu,
    QuickGelu,
}

impl Activation {
    pub fn apply(self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Activation::Gelu => ops::gelu(x)?,
            Activation::QuickGelu => ops::quick_gelu(x)?,
        })
    }
}

/// Two linear layers with an activation between them (`{name}.fc1`, `{name}.fc2`).
#[derive(Debug, Clone)]
pub struct Mlp {
    pub fc1: Linear,
    pub fc2: Linear,
    pub act: Activation,
}

impl Mlp {
    pub fn new(
        store: &mut ParamStore,
        name: &str,
        width: usize,
        hidden: usize,
        act: Activation,
    ) -> Result<Self> {
        Ok(Mlp {
            fc1: Linear::new(store, &format!("{name}.fc1"), width, hidden, true)?,
            fc2: Linear::new(store, &format!("{name}.fc2"), hidden, width, true)?,
            act,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.fc2.forward(&self.act.apply(&self.fc1.forward(x)?)?)
    }
}

/// Multi-head attention with separate query/key/value/output projections (`{name}.q|k|v|o`).
#[derive(Debug, Clone)]
pub struct Attention {
    pub q: Linear,
    pub k: Linear,
    pub v: Linear,
    pub o: Linear,
    pub heads: usize,
}

impl Attention {
    pub fn new(
        store: &mut ParamStore,
        name: &str,
        width: usize,
        kv_width: usize,
        heads: usize,
    ) -> Result<Self> {
        Ok(Attention {
            q: Linear::new(store, &format!("{name}.q"), width, width, true)?,
            k: Linear::new(store, &format!("{name}.k"), kv_width, width, true)?,
            v: Linear::new(store, &format!("{name}.v"), kv_width, width, true)?,
            o: Linear::new(store, &format!("{name}.o"), width, width, true)?,
            heads,
        })
    }

    /// Queries from `x` [B, Sq, W], keys and values from `context` [B, Sk, Wc].
    pub fn forward(
        &self,
        x: &Tensor,
        context: &Tensor,
        key_bias: Option<&Tensor>,
    ) -> Result<Tensor> {
        let q = self.q.forward(x)?;
        let k = self.k.forward(context)?;
        let v = self.v.forward(context)?;
        let out = ops::multi_head_attention(&q, &k, &v, self.heads, key_bias)?;
        self.o.forward(&out)
    }

    /// `residual + forward(x, context)` with the projections on real rows only: the output
    /// projection on `rows` of `x`; from [`MIN_WIDTH_TO_SKIP_QKV`] on, also the queries (on `rows`)
    /// and the keys and values (on `context_rows` of `context`, which must be the rows `key_bias`
    /// leaves unmasked). Padding rows keep `residual`.
    pub fn add_to(
        &self,
        residual: &Tensor,
        x: &Tensor,
        rows: Option<&RealRows>,
        context: &Tensor,
        context_rows: Option<&RealRows>,
        key_bias: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (q_rows, kv_rows) = if self.q.weight.dim(0)? >= MIN_WIDTH_TO_SKIP_QKV {
            (rows, context_rows)
        } else {
            (None, None)
        };
        let queries = OnRows::pick(x, q_rows)?;
        let q = queries.project(&self.q)?;
        // Self-attention: the keys and values read the rows just picked for the queries.
        let keys = if x.id() == context.id() && same_rows(q_rows, kv_rows) {
            queries
        } else {
            OnRows::pick(context, kv_rows)?
        };
        let k = keys.project(&self.k)?;
        let v = keys.project(&self.v)?;
        let out = ops::multi_head_attention(&q, &k, &v, self.heads, key_bias)?;
        plus_on_rows(residual, &out, rows, |o| self.o.forward(o))
    }
}

fn same_rows(a: Option<&RealRows>, b: Option<&RealRows>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => a.index.id() == b.index.id(),
        _ => false,
    }
}

/// Turns a [B, S] 0/1 mask (F32) into the additive [B, 1, 1, S] key bias.
pub fn key_bias(mask: &Tensor) -> Result<Tensor> {
    let (b, s) = mask.dims2()?;
    Ok(mask
        .affine(-MASKED_KEY_BIAS, MASKED_KEY_BIAS)?
        .reshape((b, 1, 1, s))?)
}

/// A transformer block. Pre-LN (CLIP ViT, MAE decoder): `x + attn(ln1 x)`, `x + mlp(ln2 x)`.
/// Post-LN (BERT/RoBERTa): `ln1(x + attn x)`, `ln2(x + mlp x)`.
#[derive(Debug, Clone)]
pub struct Block {
    pub ln1: Norm,
    pub attn: Attention,
    pub ln2: Norm,
    pub mlp: Mlp,
    pub pre_norm: bool,
}

impl Block {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: &mut ParamStore,
        name: &str,
        width: usize,
        heads: usize,
        hidden: usize,
        act: Activation,
        pre_norm: bool,
        eps: f64,
    ) -> Result<Self> {
        Ok(Block {
            ln1: Norm::new(store, &format!("{name}.ln1"), width, eps)?,
            attn: Attention::new(store, &format!("{name}.attn"), width, width, heads)?,
            ln2: Norm::new(store, &format!("{name}.ln2"), width, eps)?,
            mlp: Mlp::new(store, &format!("{name}.mlp"), width, hidden, act)?,
            pre_norm,
        })
    }

    pub fn forward(&self, x: &Tensor, key_bias: Option<&Tensor>) -> Result<Tensor> {
        self.forward_rows(x, key_bias, None)
    }

    /// [`Block::forward`] with the projections and the MLP computed on `rows` only (see
    /// [`RealRows`]).
    pub fn forward_rows(
        &self,
        x: &Tensor,
        key_bias: Option<&Tensor>,
        rows: Option<&RealRows>,
    ) -> Result<Tensor> {
        if self.pre_norm {
            let h = self.ln1.forward(x)?;
            let x = self.attn.add_to(x, &h, rows, &h, rows, key_bias)?;
            plus_on_rows(&x, &x, rows, |x| self.mlp.forward(&self.ln2.forward(x)?))
        } else {
            let x = self
                .ln1
                .forward(&self.attn.add_to(x, x, rows, x, rows, key_bias)?)?;
            self.ln2
                .forward(&plus_on_rows(&x, &x, rows, |x| self.mlp.forward(x))?)
        }
    }
}

/// M3AE's co-attention layer (a BERT layer with cross-attention), post-LN:
/// self-attention over the own stream, cross-attention to the other stream, feed-forward.
#[derive(Debug, Clone)]
pub struct CoAttentionLayer {
    pub self_attn: Attention,
    pub ln_self: Norm,
    pub cross_attn: Attention,
    pub ln_cross: Norm,
    pub mlp: Mlp,
    pub ln_out: Norm,
}

impl CoAttentionLayer {
    pub fn new(
        store: &mut ParamStore,
        name: &str,
        width: usize,
        heads: usize,
        hidden: usize,
        eps: f64,
    ) -> Result<Self> {
        Ok(CoAttentionLayer {
            self_attn: Attention::new(store, &format!("{name}.self_attn"), width, width, heads)?,
            ln_self: Norm::new(store, &format!("{name}.ln_self"), width, eps)?,
            cross_attn: Attention::new(store, &format!("{name}.cross_attn"), width, width, heads)?,
            ln_cross: Norm::new(store, &format!("{name}.ln_cross"), width, eps)?,
            mlp: Mlp::new(
                store,
                &format!("{name}.mlp"),
                width,
                hidden,
                Activation::Gelu,
            )?,
            ln_out: Norm::new(store, &format!("{name}.ln_out"), width, eps)?,
        })
    }

    /// `x`: own stream, `own_bias`: its padding bias, `own_rows`: its real rows; `other`,
    /// `other_bias`, `other_rows`: the same for the other stream. Row-wise work runs on real rows
    /// only (see [`RealRows`]).
    pub fn forward(
        &self,
        x: &Tensor,
        own_bias: Option<&Tensor>,
        own_rows: Option<&RealRows>,
        other: &Tensor,
        other_bias: Option<&Tensor>,
        other_rows: Option<&RealRows>,
    ) -> Result<Tensor> {
        let x = self.ln_self.forward(
            &self
                .self_attn
                .add_to(x, x, own_rows, x, own_rows, own_bias)?,
        )?;
        let x = self.ln_cross.forward(
            &self
                .cross_attn
                .add_to(&x, &x, own_rows, other, other_rows, other_bias)?,
        )?;
        self.ln_out
            .forward(&plus_on_rows(&x, &x, own_rows, |x| self.mlp.forward(x))?)
    }
}

/// The rows of a `[B, S]` stream that hold real tokens (mask 1), as U32 indices into its `B·S`
/// rows. Row-wise work (projections, the MLP) on padding rows is never read: padding keys get
/// [`MASKED_KEY_BIAS`], so no real token attends to them (their keys and values may be anything
/// finite), and the losses and heads read padding rows with weight zero or not at all.
#[derive(Debug, Clone)]
pub struct RealRows {
    index: Tensor,
}

impl RealRows {
    /// None when every row is real (nothing to skip).
    pub fn of(mask: &Tensor) -> Result<Option<Self>> {
        let values = mask
            .flatten_all()?
            .to_dtype(candle_core::DType::F32)?
            .to_vec1::<f32>()?;
        let index: Vec<u32> = (0..values.len() as u32)
            .filter(|&i| values[i as usize] > 0.5)
            .collect();
        if index.len() == values.len() {
            return Ok(None);
        }
        let n = index.len();
        Ok(Some(RealRows {
            index: Tensor::from_vec(index, n, mask.device())?,
        }))
    }
}

/// `x + f(source)` for a row-wise `f`, with `f` computed on the real rows only (padding rows keep
/// `x`). `x` and `source` are `[B, S, ·]` streams over the same rows.
fn plus_on_rows(
    x: &Tensor,
    source: &Tensor,
    rows: Option<&RealRows>,
    f: impl Fn(&Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    let Some(rows) = rows else {
        return Ok((x + f(source)?)?);
    };
    if rows.index.elem_count() == 0 {
        // Nothing but padding: nothing to compute.
        return Ok(x.clone());
    }
    let (b, s, w) = x.dims3()?;
    let picked = f(&source.flatten_to(1)?.index_select(&rows.index, 0)?)?;
    Ok(x.reshape((b * s, w))?
        .index_add(&rows.index, &picked, 0)?
        .reshape((b, s, w))?)
}

/// A `[B, S, W]` stream, with its real rows picked out as `[N, W]` when it has padding.
struct OnRows<'a> {
    x: &'a Tensor,
    rows: Picked<'a>,
}

enum Picked<'a> {
    /// Every row is real.
    All,
    /// The real rows, and where they came from.
    Rows(Tensor, &'a RealRows),
    /// Nothing but padding.
    NoRow,
}

impl<'a> OnRows<'a> {
    fn pick(x: &'a Tensor, rows: Option<&'a RealRows>) -> Result<Self> {
        let rows = match rows {
            None => Picked::All,
            Some(rows) if rows.index.elem_count() == 0 => Picked::NoRow,
            Some(rows) => Picked::Rows(x.flatten_to(1)?.index_select(&rows.index, 0)?, rows),
        };
        Ok(OnRows { x, rows })
    }

    /// `linear` over the stream, computed on the real rows; padding rows of the result are 0.
    fn project(&self, linear: &Linear) -> Result<Tensor> {
        let (b, s, _) = self.x.dims3()?;
        let width = linear.weight.dim(0)?;
        let zeros = || Tensor::zeros((b * s, width), self.x.dtype(), self.x.device());
        Ok(match &self.rows {
            Picked::All => linear.forward(self.x)?,
            Picked::Rows(picked, rows) => zeros()?
                .index_add(&rows.index, &linear.forward(picked)?, 0)?
                .reshape((b, s, width))?,
            Picked::NoRow => zeros()?.reshape((b, s, width))?,
        })
    }
}

/// `tanh(W h[:, 0] + b)`: the pooler on a stream's first token.
#[derive(Debug, Clone)]
pub struct Pooler {
    pub dense: Linear,
}

impl Pooler {
    pub fn new(store: &mut ParamStore, name: &str, width: usize) -> Result<Self> {
        Ok(Pooler {
            dense: Linear::new(store, &format!("{name}.dense"), width, width, true)?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self
            .dense
            .forward(&x.narrow(1, 0, 1)?.squeeze(1)?)?
            .tanh()?)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use candle_core::{DType, Device, Tensor};

    use super::*;
    use crate::kernels::tests::max_abs_diff;

    // Wide enough that the query, key and value projections skip padding rows too.
    const WIDTH: usize = MIN_WIDTH_TO_SKIP_QKV;

    /// Three sequences of six tokens: four real, all real, one real.
    pub(crate) fn mask() -> Tensor {
        let rows: [[f32; 6]; 3] = [
            [1.0, 1.0, 1.0, 1.0, 0.0, 0.0],
            [1.0; 6],
            [1.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        ];
        Tensor::new(&rows, &Device::Cpu).unwrap()
    }

    /// Deterministic, varied inputs [3, 6, WIDTH].
    fn input(phase: f64) -> Tensor {
        input_of(WIDTH, phase)
    }

    fn input_of(width: usize, phase: f64) -> Tensor {
        (Tensor::arange(0u32, (3 * 6 * width) as u32, &Device::Cpu)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
            .affine(0.37, phase)
            .unwrap()
            .sin()
            .unwrap()
            * 1.5)
            .unwrap()
            .reshape((3, 6, width))
            .unwrap()
    }

    /// Largest difference over the real rows (mask 1) and over the padding rows.
    pub(crate) fn differences(a: &Tensor, b: &Tensor) -> (f64, f64) {
        let m = mask().unsqueeze(2).unwrap();
        let real = max_abs_diff(&a.broadcast_mul(&m).unwrap(), &b.broadcast_mul(&m).unwrap());
        let pad = m.affine(-1.0, 1.0).unwrap();
        let padding = max_abs_diff(
            &a.broadcast_mul(&pad).unwrap(),
            &b.broadcast_mul(&pad).unwrap(),
        );
        (real, padding)
    }

    /// The parameters' gradients of a loss that reads the real rows only.
    fn gradients(store: &ParamStore, out: &Tensor) -> Vec<(String, Tensor)> {
        let weights = input(0.5)
            .broadcast_mul(&mask().unsqueeze(2).unwrap())
            .unwrap();
        let grads = (out * weights)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        store
            .iter()
            .map(|(name, p)| (name.clone(), grads.get(p.var.as_tensor()).unwrap().clone()))
            .collect()
    }

    fn assert_same_gradients(with: &[(String, Tensor)], without: &[(String, Tensor)]) {
        assert_eq!(with.len(), without.len());
        for ((name, a), (_, b)) in with.iter().zip(without) {
            let d = max_abs_diff(a, b);
            assert!(d < 1e-4, "{name}: gradients differ by {d}");
        }
    }

    #[test]
    fn real_rows_lists_the_mask_ones_and_nothing_when_all_are_real() {
        let rows = RealRows::of(&mask()).unwrap().unwrap();
        assert_eq!(
            rows.index.to_vec1::<u32>().unwrap(),
            [0, 1, 2, 3, 6, 7, 8, 9, 10, 11, 12]
        );
        let all = Tensor::ones((2, 3), DType::F32, &Device::Cpu).unwrap();
        assert!(RealRows::of(&all).unwrap().is_none());
    }

    /// What a block leaves in a padding row when it skips every residual branch there: the
    /// input (pre-LN) or the input through both norms (post-LN).
    fn no_branch(block: &Block, x: &Tensor) -> Tensor {
        if block.pre_norm {
            x.clone()
        } else {
            block.ln2.forward(&block.ln1.forward(x).unwrap()).unwrap()
        }
    }

    /// `x` with NaN in every padding row.
    pub(crate) fn poisoned(x: &Tensor) -> Tensor {
        let real = mask()
            .to_dtype(DType::U8)
            .unwrap()
            .unsqueeze(2)
            .unwrap()
            .broadcast_as(x.shape())
            .unwrap();
        let nan = Tensor::full(f32::NAN, x.shape(), x.device()).unwrap();
        real.where_cond(x, &nan).unwrap()
    }

    /// The real rows (mask 1) of a [3, 6, W] stream, as [11, W].
    pub(crate) fn real_rows(x: &Tensor) -> Tensor {
        let rows = RealRows::of(&mask()).unwrap().unwrap();
        x.flatten_to(1)
            .unwrap()
            .index_select(&rows.index, 0)
            .unwrap()
    }

    fn block(seed: u64, pre_norm: bool) -> (ParamStore, Block) {
        block_of(WIDTH, seed, pre_norm)
    }

    fn block_of(width: usize, seed: u64, pre_norm: bool) -> (ParamStore, Block) {
        let mut store = ParamStore::new(&Device::Cpu, seed);
        let block = Block::new(
            &mut store,
            "b",
            width,
            2,
            32,
            Activation::Gelu,
            pre_norm,
            1e-5,
        )
        .unwrap();
        (store, block)
    }

    #[test]
    fn a_batch_of_padding_only_skips_every_residual_branch() {
        for pre_norm in [true, false] {
            let (_, block) = block(5, pre_norm);
            let nothing_real = Tensor::zeros((3, 6), DType::F32, &Device::Cpu).unwrap();
            let rows = RealRows::of(&nothing_real).unwrap();
            let x = input(0.0);
            let out = block.forward_rows(&x, None, rows.as_ref()).unwrap();
            assert_eq!(max_abs_diff(&out, &no_branch(&block, &x)), 0.0);
        }
    }

    #[test]
    fn projections_on_real_rows_leave_zeros_in_padding_rows() {
        let mut store = ParamStore::new(&Device::Cpu, 6);
        let linear = Linear::new(&mut store, "l", WIDTH, 8, true).unwrap();
        let x = input(0.0);
        let rows = RealRows::of(&mask()).unwrap();
        let projected = OnRows::pick(&x, rows.as_ref())
            .unwrap()
            .project(&linear)
            .unwrap();
        let every_row = linear.forward(&x).unwrap();
        let zeros = every_row.zeros_like().unwrap();
        let (real, _) = differences(&projected, &every_row);
        assert!(real < 1e-6, "real rows differ by {real}");
        let (_, padding) = differences(&projected, &zeros);
        assert_eq!(padding, 0.0);
    }

    // Keys and values come from real rows only, so not even NaN in a padding row reaches a real
    // one (computed on every row, a NaN key makes every score of its sequence NaN).
    #[test]
    fn nan_in_padding_rows_never_reaches_a_real_row() {
        let bias = key_bias(&mask()).unwrap();
        let rows = RealRows::of(&mask()).unwrap();
        let (x, bad) = (input(0.0), poisoned(&input(0.0)));
        for pre_norm in [true, false] {
            let (_, block) = block(3, pre_norm);
            let clean = block.forward(&x, Some(&bias)).unwrap();
            let out = block
                .forward_rows(&bad, Some(&bias), rows.as_ref())
                .unwrap();
            let d = max_abs_diff(&real_rows(&out), &real_rows(&clean));
            assert!(d < 1e-5, "pre_norm {pre_norm}: real rows differ by {d}");
        }
        let mut store = ParamStore::new(&Device::Cpu, 4);
        let layer = CoAttentionLayer::new(&mut store, "c", WIDTH, 2, 32, 1e-5).unwrap();
        let image = input(1.0).narrow(1, 0, 4).unwrap();
        let clean = layer
            .forward(&image, None, None, &x, Some(&bias), None)
            .unwrap();
        let out = layer
            .forward(&image, None, None, &bad, Some(&bias), rows.as_ref())
            .unwrap();
        let d = max_abs_diff(&out, &clean);
        assert!(d < 1e-5, "the image stream differs by {d}");
        let text = layer
            .forward(&bad, Some(&bias), rows.as_ref(), &image, None, None)
            .unwrap();
        let clean = layer
            .forward(&x, Some(&bias), None, &image, None, None)
            .unwrap();
        let d = max_abs_diff(&real_rows(&text), &real_rows(&clean));
        assert!(d < 1e-5, "the text stream's real rows differ by {d}");
    }

    // The negative control of the test above: below MIN_WIDTH_TO_SKIP_QKV the keys and values
    // are computed on every row, so NaN in a padding row does reach the real rows; the output
    // projection and the MLP still skip padding rows.
    #[test]
    fn narrow_attention_projects_keys_and_values_on_every_row() {
        let width = MIN_WIDTH_TO_SKIP_QKV / 8;
        let bias = key_bias(&mask()).unwrap();
        let rows = RealRows::of(&mask()).unwrap();
        let x = input_of(width, 0.0);
        for pre_norm in [true, false] {
            let (_, block) = block_of(width, 3, pre_norm);
            let out = block
                .forward_rows(&poisoned(&x), Some(&bias), rows.as_ref())
                .unwrap();
            let values = real_rows(&out)
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            assert!(values.iter().any(|v| v.is_nan()), "pre_norm {pre_norm}");
            let out = block.forward_rows(&x, Some(&bias), rows.as_ref()).unwrap();
            let (_, skipped) = differences(&out, &no_branch(&block, &x));
            assert_eq!(skipped, 0.0, "pre_norm {pre_norm}");
        }
    }

    #[test]
    fn blocks_skip_padding_rows_and_change_nothing_a_real_row_reads() {
        for pre_norm in [true, false] {
            let (store, block) = block(3, pre_norm);
            let (x, bias) = (input(0.0), key_bias(&mask()).unwrap());
            let rows = RealRows::of(&mask()).unwrap();
            let every_row = block.forward(&x, Some(&bias)).unwrap();
            let real_only = block.forward_rows(&x, Some(&bias), rows.as_ref()).unwrap();
            let (real, padding) = differences(&every_row, &real_only);
            assert!(
                real < 1e-5,
                "pre_norm {pre_norm}: real rows differ by {real}"
            );
            // The positive control: every residual branch really was skipped on the padding rows.
            assert!(
                padding > 1e-3,
                "pre_norm {pre_norm}: padding rows differ by {padding}"
            );
            let (_, skipped) = differences(&real_only, &no_branch(&block, &x));
            assert_eq!(skipped, 0.0, "pre_norm {pre_norm}");
            assert_same_gradients(
                &gradients(&store, &real_only),
                &gradients(&store, &every_row),
            );
        }
    }

    #[test]
    fn co_attention_skips_its_own_padding_rows_only() {
        let mut store = ParamStore::new(&Device::Cpu, 4);
        let layer = CoAttentionLayer::new(&mut store, "c", WIDTH, 2, 32, 1e-5).unwrap();
        let (text, bias) = (input(0.0), key_bias(&mask()).unwrap());
        let image = input(1.0).narrow(1, 0, 4).unwrap();
        let rows = RealRows::of(&mask()).unwrap();
        let every_row = layer
            .forward(&text, Some(&bias), None, &image, None, None)
            .unwrap();
        let real_only = layer
            .forward(&text, Some(&bias), rows.as_ref(), &image, None, None)
            .unwrap();
        let (real, padding) = differences(&every_row, &real_only);
        assert!(real < 1e-5, "real rows differ by {real}");
        assert!(padding > 1e-3, "padding rows differ by {padding}");
        assert_same_gradients(
            &gradients(&store, &real_only),
            &gradients(&store, &every_row),
        );
    }
}
