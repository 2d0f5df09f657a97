//! The named, trainable parameters of a model, created with seeded initial values.
//!
//! candle's `VarMap` initialises from an unseeded generator, so umdflow keeps its own store:
//! every tensor gets its initial values from a generator derived from (seed, parameter name), which
//! makes initialisation independent of construction order and repeatable bit for bit.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};

use crate::config::WeightInit;
use crate::error::{ModelError, Result};
use crate::rng::SplitMix64;

/// Standard deviation of M3AE's `normal_(0, 0.02)`: embedding tables always, weight matrices under
/// [`WeightInit::Normal`].
pub const INIT_STD: f64 = 0.02;

/// What a parameter is; decides weight decay (none for biases and norms) and the initialiser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamRole {
    Weight,
    Bias,
    Norm,
    Embedding,
}

/// One trainable tensor.
#[derive(Debug, Clone)]
pub struct Param {
    pub var: Var,
    pub role: ParamRole,
}

/// How to fill a new parameter.
#[derive(Debug, Clone, Copy)]
pub enum Init {
    /// N(0, std²), M3AE's `normal_(0, 0.02)`.
    Normal(f64),
    /// A weight matrix with these fans, drawn by the store's [`WeightInit`].
    Matrix {
        fan_in: usize,
        fan_out: usize,
    },
    Zeros,
    Ones,
}

/// Named parameters in a deterministic (sorted) order.
#[derive(Debug, Clone)]
pub struct ParamStore {
    params: BTreeMap<String, Param>,
    device: Device,
    seed: u64,
    weight_init: WeightInit,
}

impl ParamStore {
    pub fn new(device: &Device, seed: u64) -> Self {
        ParamStore {
            params: BTreeMap::new(),
            device: device.clone(),
            seed,
            weight_init: WeightInit::Normal,
        }
    }

    /// The same store, drawing new weight matrices ([`Init::Matrix`]) with `weight_init`.
    pub fn with_weight_init(mut self, weight_init: WeightInit) -> Self {
        self.weight_init = weight_init;
        self
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Creates (or, when it already exists, returns) the parameter `name`.
    pub fn get(
        &mut self,
        name: &str,
        shape: &[usize],
        role: ParamRole,
        init: Init,
    ) -> Result<Tensor> {
        if let Some(existing) = self.params.get(name) {
            if existing.var.dims() != shape {
                return Err(ModelError::Config(format!(
                    "parameter `{name}` has shape {:?}, expected {shape:?}",
                    existing.var.dims()
                )));
            }
            return Ok(existing.var.as_tensor().clone());
        }
        let count: usize = shape.iter().product();
        let values: Vec<f32> = match init {
            Init::Zeros => vec![0.0; count],
            Init::Ones => vec![1.0; count],
            Init::Normal(std) => {
                let mut rng = SplitMix64::derived(self.seed, name);
                (0..count).map(|_| (rng.normal() * std) as f32).collect()
            }
            Init::Matrix { fan_in, fan_out } => {
                let mut rng = SplitMix64::derived(self.seed, name);
                match self.weight_init {
                    WeightInit::Normal => (0..count)
                        .map(|_| (rng.normal() * INIT_STD) as f32)
                        .collect(),
                    WeightInit::Xavier => {
                        let bound = (6.0 / (fan_in + fan_out) as f64).sqrt();
                        (0..count)
                            .map(|_| ((2.0 * rng.next_f64() - 1.0) * bound) as f32)
                            .collect()
                    }
                }
            }
        };
        let var = Var::from_tensor(&Tensor::from_vec(values, shape, &self.device)?)?;
        let tensor = var.as_tensor().clone();
        self.params.insert(name.to_string(), Param { var, role });
        Ok(tensor)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Param)> {
        self.params.iter()
    }

    pub fn len(&self) -> usize {
        self.params.len()
    }

    pub fn is_empty(&self) -> bool {
        self.params.is_empty()
    }

    pub fn param(&self, name: &str) -> Option<&Param> {
        self.params.get(name)
    }

    /// Total number of scalar parameters.
    pub fn num_scalars(&self) -> usize {
        self.params.values().map(|p| p.var.elem_count()).sum()
    }

    /// Writes every parameter to a safetensors file (names as in the store).
    pub fn save(&self, path: &Path) -> Result<()> {
        let tensors: HashMap<String, Tensor> = self
            .params
            .iter()
            .map(|(k, p)| (k.clone(), p.var.as_tensor().clone()))
            .collect();
        candle_core::safetensors::save(&tensors, path).map_err(|e| file_error(path, e))
    }

    /// Overwrites every parameter with the tensor of the same name in a safetensors file; a
    /// missing name, an extra name or a shape mismatch is an error naming it.
    pub fn load_into(&mut self, path: &Path) -> Result<()> {
        let loaded =
            candle_core::safetensors::load(path, &self.device).map_err(|e| file_error(path, e))?;
        for name in loaded.keys() {
            if !self.params.contains_key(name) {
                return Err(ModelError::File {
                    path: path.display().to_string(),
                    message: format!(
                        "tensor `{name}` is not a parameter of this model configuration"
                    ),
                });
            }
        }
        for (name, param) in &self.params {
            let tensor = loaded.get(name).ok_or_else(|| ModelError::File {
                path: path.display().to_string(),
                message: format!("missing parameter `{name}`"),
            })?;
            if tensor.dims() != param.var.dims() || tensor.dtype() != DType::F32 {
                return Err(ModelError::File {
                    path: path.display().to_string(),
                    message: format!(
                        "parameter `{name}` is {:?} {:?}, expected F32 {:?}",
                        tensor.dtype(),
                        tensor.dims(),
                        param.var.dims()
                    ),
                });
            }
            param.var.set(tensor)?;
        }
        Ok(())
    }
}

fn file_error(path: &Path, e: candle_core::Error) -> ModelError {
    ModelError::File {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}
