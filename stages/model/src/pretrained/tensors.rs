//! One `model.safetensors` read for mapping: tensors are taken by name with their expected shape,
//! known extras are set aside, and every problem is collected so that one error names them all.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use crate::error::{ModelError, Result};

/// The tensors of a checkpoint file, with the bookkeeping of which were used.
pub(super) struct CheckpointTensors {
    path: PathBuf,
    tensors: BTreeMap<String, Tensor>,
    used: BTreeSet<String>,
    problems: Vec<String>,
}

impl CheckpointTensors {
    pub(super) fn read(path: &Path, device: &Device) -> Result<Self> {
        if !path.is_file() {
            return Err(ModelError::File {
                path: path.display().to_string(),
                message: "no such file; umdflow reads `model.safetensors` (a folder saved with \
                          `save_pretrained`; `pytorch_model.bin` is not read)"
                    .into(),
            });
        }
        let tensors =
            candle_core::safetensors::load(path, device).map_err(|e| ModelError::File {
                path: path.display().to_string(),
                message: format!("not a readable safetensors file: {e}"),
            })?;
        Ok(CheckpointTensors {
            path: path.to_path_buf(),
            tensors: tensors.into_iter().collect(),
            used: BTreeSet::new(),
            problems: Vec::new(),
        })
    }

    pub(super) fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// Takes `name` (or the first of `aliases` present, for older spellings such as BERT's
    /// `LayerNorm.gamma`) as F32 of exactly `shape`; records a problem and returns None otherwise.
    pub(super) fn take(&mut self, name: &str, aliases: &[&str], shape: &[usize]) -> Option<Tensor> {
        let found = std::iter::once(name)
            .chain(aliases.iter().copied())
            .find(|n| self.tensors.contains_key(*n));
        let Some(found) = found else {
            self.problems.push(format!(
                "missing tensor `{name}` (expected shape {shape:?})"
            ));
            return None;
        };
        self.used.insert(found.to_string());
        let tensor = &self.tensors[found];
        if tensor.dims() != shape {
            self.problems.push(format!(
                "tensor `{found}` has shape {:?}, expected {shape:?}",
                tensor.dims()
            ));
            return None;
        }
        match tensor.dtype() {
            DType::F32 => Some(tensor.clone()),
            DType::F16 | DType::BF16 | DType::F64 => match tensor.to_dtype(DType::F32) {
                Ok(t) => Some(t),
                Err(e) => {
                    self.problems.push(format!(
                        "tensor `{found}` could not be converted to F32: {e}"
                    ));
                    None
                }
            },
            other => {
                self.problems.push(format!(
                    "tensor `{found}` is {other:?}, expected a floating-point tensor"
                ));
                None
            }
        }
    }

    /// Sets aside every tensor for which `known` holds: parts of the Hugging Face model that
    /// umdflow deliberately does not use (a pooler, the other tower of CLIP, buffers).
    pub(super) fn ignore(&mut self, known: impl Fn(&str) -> bool) {
        let names: Vec<String> = self
            .tensors
            .keys()
            .filter(|n| !self.used.contains(*n) && known(n))
            .cloned()
            .collect();
        self.used.extend(names);
    }

    /// Ends the mapping: Ok when every expected tensor was found with its shape and no tensor of
    /// the file is left over; otherwise one error naming every problem.
    pub(super) fn finish(mut self, layout: &str) -> Result<()> {
        let leftover: Vec<String> = self
            .tensors
            .keys()
            .filter(|n| !self.used.contains(*n))
            .map(|n| {
                format!(
                    "tensor `{n}` {:?} is not part of the {layout} layout",
                    self.tensors[n].dims()
                )
            })
            .collect();
        self.problems.extend(leftover);
        if self.problems.is_empty() {
            return Ok(());
        }
        Err(ModelError::File {
            path: self.path.display().to_string(),
            message: format!(
                "does not match the {layout} layout its config.json describes ({} problem{}):\n  {}",
                self.problems.len(),
                if self.problems.len() == 1 { "" } else { "s" },
                self.problems.join("\n  ")
            ),
        })
    }
}

/// The Hugging Face names of one transformer block's parts, relative to the block; mapped onto
/// umdflow's `Block` (`attn.{q,k,v,o}`, `mlp.{fc1,fc2}`, `ln1`, `ln2`).
pub(super) struct BlockNames {
    pub(super) q: &'static str,
    pub(super) k: &'static str,
    pub(super) v: &'static str,
    pub(super) o: &'static str,
    pub(super) fc1: &'static str,
    pub(super) fc2: &'static str,
    /// The norm around (post-LN) or before (pre-LN) the attention.
    pub(super) ln1: &'static str,
    /// The norm around or before the MLP.
    pub(super) ln2: &'static str,
}

/// The tensors mapped so far, under umdflow's names (`{prefix}{name}`).
pub(super) struct Mapped {
    prefix: &'static str,
    pub(super) tensors: BTreeMap<String, Tensor>,
}

impl Mapped {
    pub(super) fn new(prefix: &'static str) -> Self {
        Mapped {
            prefix,
            tensors: BTreeMap::new(),
        }
    }

    /// Records `ours` when the tensor was found (a problem was recorded otherwise).
    pub(super) fn put(&mut self, ours: &str, tensor: Option<Tensor>) {
        if let Some(t) = tensor {
            self.tensors.insert(format!("{}{ours}", self.prefix), t);
        }
    }

    /// A layer norm: `{hf}.weight`/`bias` [width] (older BERT files: `gamma`/`beta`).
    pub(super) fn norm(
        &mut self,
        file: &mut CheckpointTensors,
        hf: &str,
        ours: &str,
        width: usize,
    ) {
        let weight = file.take(&format!("{hf}.weight"), &[&format!("{hf}.gamma")], &[width]);
        let bias = file.take(&format!("{hf}.bias"), &[&format!("{hf}.beta")], &[width]);
        self.put(&format!("{ours}.weight"), weight);
        self.put(&format!("{ours}.bias"), bias);
    }

    /// A linear layer: `{hf}.weight` [out, in] and `{hf}.bias` [out] (PyTorch's layout is ours).
    pub(super) fn linear(
        &mut self,
        file: &mut CheckpointTensors,
        hf: &str,
        ours: &str,
        [out, input]: [usize; 2],
    ) {
        let weight = file.take(&format!("{hf}.weight"), &[], &[out, input]);
        let bias = file.take(&format!("{hf}.bias"), &[], &[out]);
        self.put(&format!("{ours}.weight"), weight);
        self.put(&format!("{ours}.bias"), bias);
    }

    /// One transformer block `hf` onto umdflow's `blocks.{k}` (`ours`).
    pub(super) fn block(
        &mut self,
        file: &mut CheckpointTensors,
        (hf, ours): (&str, &str),
        names: &BlockNames,
        width: usize,
        mlp: usize,
    ) {
        for (part, our_part, shape) in [
            (names.q, "attn.q", [width, width]),
            (names.k, "attn.k", [width, width]),
            (names.v, "attn.v", [width, width]),
            (names.o, "attn.o", [width, width]),
            (names.fc1, "mlp.fc1", [mlp, width]),
            (names.fc2, "mlp.fc2", [width, mlp]),
        ] {
            self.linear(
                file,
                &format!("{hf}.{part}"),
                &format!("{ours}.{our_part}"),
                shape,
            );
        }
        self.norm(
            file,
            &format!("{hf}.{}", names.ln1),
            &format!("{ours}.ln1"),
            width,
        );
        self.norm(
            file,
            &format!("{hf}.{}", names.ln2),
            &format!("{ours}.ln2"),
            width,
        );
    }
}
