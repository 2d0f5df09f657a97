//! Training checkpoints, so that an interrupted run (a crash, Ctrl-C, a Slurm time limit or
//! preemption) continues where it stopped instead of starting over, and ends bit-identical to an
//! uninterrupted run.
//!
//! One file in the instance's resume folder (`umdflow_stages::resume`) holds everything the next
//! steps depend on: the parameters, the optimiser's moments and step count, the EMA target, and the
//! loop's own state ([`LoopState`]: its seeded streams and its step records so far; batch order and
//! masks are drawn per epoch from the seed, so they need none). Layout: a magic line, the length of
//! a JSON header, the header (format version, the instance's key, what trained, the step, the loop's
//! state, the tensor names and shapes), the tensors' f32 bytes, and a blake3 hash of all of it. A
//! file that is truncated, damaged, of another format or written for another key or run is ignored
//! with a log line and training starts over: never a panic, never a wrong resume.
//!
//! [`LoopCheckpoints`] is a training loop's side of it (resume at the start, save when due and at a
//! stop), shared by the MR loop (`pretrain`, `calibrate`) and fine-tuning (`coordinate-tune`).

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use umdflow_stages::Interval;

use crate::error::{ModelError, Result};
use crate::objective::EmaTarget;
use crate::optim::Optimiser;
use crate::store::ParamStore;

/// Bumped when the layout or the meaning of a field changes: older files are then ignored.
/// 2: the loop's own state is one JSON value of the loop's choosing ([`LoopState`]).
pub const FORMAT_VERSION: u32 = 2;
const MAGIC: &[u8; 8] = b"umdckpt\n";
const HASH_LEN: usize = 32;

/// Where a training loop checkpoints, how often, and what a checkpoint must name to be used.
#[derive(Debug, Clone)]
pub struct Checkpointer {
    /// The checkpoint file (in the instance's resume folder).
    pub path: PathBuf,
    /// The instance's key: a checkpoint of another key is never used.
    pub key: String,
    /// What trains (`pretrain`, `calibrate`, `coordinate-tune`): the loops of two kinds never
    /// share a file.
    pub purpose: String,
    pub interval: Interval,
}

/// What a training loop carries from one step to the next besides the tensors of [`Training`]
/// (its seeded streams, its step records), and how it is saved. Every piece must be in it: one
/// left out makes a resumed run differ from an uninterrupted one.
pub trait LoopState: Sized {
    /// The saved form. Floats should be saved as their bits, so they come back exactly.
    type Saved: Serialize + DeserializeOwned;
    fn save(&self) -> Self::Saved;
    /// The state back from its saved form, or why it is not a state after `step` steps (checked
    /// before any tensor is touched).
    fn restore(saved: Self::Saved, step: u64) -> std::result::Result<Self, String>;
}

/// The tensors of a run: parameters, optimiser and EMA target.
pub struct Training<'a> {
    pub store: &'a ParamStore,
    pub optimiser: &'a mut Optimiser,
    pub ema: Option<&'a EmaTarget>,
    /// The run's step count: a checkpoint of a run with another is not this run's.
    pub total_steps: u64,
}

#[derive(Serialize, Deserialize)]
struct Header {
    format: u32,
    key: String,
    purpose: String,
    total_steps: u64,
    step: u64,
    optimiser_steps: i32,
    /// The loop's [`LoopState::Saved`].
    state: serde_json::Value,
    tensors: Vec<SavedTensor>,
}

#[derive(Serialize, Deserialize)]
struct SavedTensor {
    name: String,
    shape: Vec<usize>,
}

/// Every tensor of the run under its checkpoint name, in a fixed order.
fn named_tensors<'t>(training: &'t Training<'_>) -> Vec<(String, &'t Tensor)> {
    let mut tensors: Vec<(String, &Tensor)> = training
        .store
        .iter()
        .map(|(name, p)| (format!("param.{name}"), p.var.as_tensor()))
        .collect();
    for (name, m, v) in training.optimiser.moments() {
        tensors.push((format!("m.{name}"), m));
        tensors.push((format!("v.{name}"), v));
    }
    if let Some(ema) = training.ema {
        tensors.extend(
            ema.store
                .iter()
                .map(|(name, p)| (format!("ema.{name}"), p.var.as_tensor())),
        );
    }
    tensors
}

fn file_error(path: &Path) -> impl Fn(std::io::Error) -> ModelError + '_ {
    move |e| ModelError::File {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// Writes to a file and to a hash at once.
struct Hashed<W: Write> {
    inner: W,
    hasher: blake3::Hasher,
}

impl<W: Write> Write for Hashed<W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(bytes)?;
        self.hasher.update(&bytes[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl Checkpointer {
    /// Writes the run's state after `step` steps atomically: a temporary file, fsynced, renamed
    /// over the last checkpoint, and the folder fsynced. A kill at any instant leaves the old or
    /// the new one.
    pub fn save<S: LoopState>(&self, training: &Training<'_>, step: u64, state: &S) -> Result<()> {
        let tensors = named_tensors(training);
        let data_error = |e: serde_json::Error| ModelError::Data(e.to_string());
        let header = Header {
            format: FORMAT_VERSION,
            key: self.key.clone(),
            purpose: self.purpose.clone(),
            total_steps: training.total_steps,
            step,
            optimiser_steps: training.optimiser.steps(),
            state: serde_json::to_value(state.save()).map_err(data_error)?,
            tensors: tensors
                .iter()
                .map(|(name, t)| SavedTensor {
                    name: name.clone(),
                    shape: t.dims().to_vec(),
                })
                .collect(),
        };
        let header = serde_json::to_vec(&header).map_err(data_error)?;
        let temporary = self
            .path
            .with_extension(format!("tmp-{}", std::process::id()));
        let err = file_error(&temporary);
        let file = File::create(&temporary).map_err(&err)?;
        let mut out = Hashed {
            inner: BufWriter::new(file),
            hasher: blake3::Hasher::new(),
        };
        out.write_all(MAGIC).map_err(&err)?;
        out.write_all(&(header.len() as u64).to_le_bytes())
            .map_err(&err)?;
        out.write_all(&header).map_err(&err)?;
        for (_, tensor) in &tensors {
            let values = tensor
                .flatten_all()?
                .to_dtype(DType::F32)?
                .to_vec1::<f32>()?;
            let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            out.write_all(&bytes).map_err(&err)?;
        }
        let hash = out.hasher.finalize();
        let mut file = out.inner.into_inner().map_err(|e| err(e.into_error()))?;
        file.write_all(hash.as_bytes()).map_err(&err)?;
        file.sync_all().map_err(&err)?;
        drop(file);
        fs::rename(&temporary, &self.path).map_err(file_error(&self.path))?;
        if let Some(dir) = self.path.parent()
            && let Ok(dir) = File::open(dir)
        {
            let _ = dir.sync_all();
        }
        Ok(())
    }

    /// Restores the run from the checkpoint file, if there is one that belongs to this run, and
    /// returns its step and the loop's state. `Ok(None)`: there is none. `Err(why)`: there is
    /// one, but it is not used (the tensors are then untouched, and the caller starts over saying
    /// why).
    pub fn load<S: LoopState>(
        &self,
        training: &mut Training<'_>,
        device: &Device,
    ) -> std::result::Result<Option<(u64, S)>, String> {
        let bytes = match fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot read it: {e}")),
        };
        let (header, data) = parse(&bytes)?;
        let expected = [
            (
                "format version",
                FORMAT_VERSION.to_string(),
                header.format.to_string(),
            ),
            ("key", self.key.clone(), header.key.clone()),
            ("stage kind", self.purpose.clone(), header.purpose.clone()),
            (
                "step count",
                training.total_steps.to_string(),
                header.total_steps.to_string(),
            ),
        ];
        for (what, want, found) in expected {
            if want != found {
                return Err(format!(
                    "it was written with {what} {found}, this run has {want}"
                ));
            }
        }
        if header.step > header.total_steps {
            return Err(format!(
                "it claims step {} of {}",
                header.step, header.total_steps
            ));
        }
        let saved = serde_json::from_value(header.state)
            .map_err(|e| format!("its training state is not readable: {e}"))?;
        let state = S::restore(saved, header.step)?;
        let mut loaded = read_tensors(&header.tensors, data, device)?;
        // Check every tensor before changing any, so a bad file never leaves a half-restored run.
        let wanted: Vec<(String, Vec<usize>)> = named_tensors(training)
            .into_iter()
            .map(|(name, t)| (name, t.dims().to_vec()))
            .collect();
        if wanted.len() != loaded.len() {
            return Err(format!(
                "it holds {} tensors, this run has {}",
                loaded.len(),
                wanted.len()
            ));
        }
        for (name, shape) in &wanted {
            match loaded.get(name) {
                Some(t) if t.dims() == shape.as_slice() => {}
                Some(t) => {
                    return Err(format!(
                        "tensor `{name}` is {:?}, this run's is {shape:?}",
                        t.dims()
                    ));
                }
                None => return Err(format!("it lacks tensor `{name}`")),
            }
        }
        apply(&mut loaded, training, header.optimiser_steps)
            .map_err(|e| format!("restoring it failed: {e}"))?;
        Ok(Some((header.step, state)))
    }
}

/// Puts the checked tensors into the run.
fn apply(
    loaded: &mut HashMap<String, Tensor>,
    training: &mut Training<'_>,
    optimiser_steps: i32,
) -> Result<()> {
    for (name, p) in training.store.iter() {
        if let Some(t) = loaded.remove(&format!("param.{name}")) {
            p.var.set(&t)?;
        }
    }
    if let Some(ema) = training.ema {
        for (name, p) in ema.store.iter() {
            if let Some(t) = loaded.remove(&format!("ema.{name}")) {
                p.var.set(&t)?;
            }
        }
    }
    let names: Vec<String> = training
        .optimiser
        .moments()
        .map(|(name, _, _)| name.to_string())
        .collect();
    let mut moments = HashMap::new();
    for name in names {
        if let (Some(m), Some(v)) = (
            loaded.remove(&format!("m.{name}")),
            loaded.remove(&format!("v.{name}")),
        ) {
            moments.insert(name, (m, v));
        }
    }
    training.optimiser.restore(optimiser_steps, &mut moments)
}

/// A training loop's side of checkpointing: it resumes from the checkpoint at the start, writes
/// one when the interval says so and one more when the run is stopped.
pub struct LoopCheckpoints<'a> {
    checkpoints: &'a Checkpointer,
    store: &'a ParamStore,
    ema: Option<&'a EmaTarget>,
    total_steps: u64,
    /// A line for the stage's log.
    note: &'a dyn Fn(&str),
    /// The step and time of the last checkpoint written or resumed from.
    saved_at: (u64, Instant),
}

impl<'a> LoopCheckpoints<'a> {
    pub fn new(
        checkpoints: &'a Checkpointer,
        store: &'a ParamStore,
        ema: Option<&'a EmaTarget>,
        total_steps: u64,
        note: &'a dyn Fn(&str),
    ) -> Self {
        LoopCheckpoints {
            checkpoints,
            store,
            ema,
            total_steps,
            note,
            saved_at: (0, Instant::now()),
        }
    }

    fn training<'t>(&'t self, optimiser: &'t mut Optimiser) -> Training<'t> {
        Training {
            store: self.store,
            optimiser,
            ema: self.ema,
            total_steps: self.total_steps,
        }
    }

    /// Restores the run from its checkpoint if there is one of this run, and logs that it
    /// resumed (`resumed from step N of M`) or why the checkpoint is ignored. Returns the step to
    /// continue from and the loop's state then; None: start from step 0.
    pub fn resume<S: LoopState>(
        &mut self,
        optimiser: &mut Optimiser,
        device: &Device,
    ) -> Option<(u64, S)> {
        let mut training = self.training(optimiser);
        match self.checkpoints.load::<S>(&mut training, device) {
            Ok(None) => None,
            Ok(Some((step, state))) => {
                (self.note)(&format!("resumed from step {step} of {}", self.total_steps));
                self.saved_at = (step, Instant::now());
                Some((step, state))
            }
            Err(why) => {
                (self.note)(&format!(
                    "ignoring the checkpoint {}: {why}; training starts over",
                    self.checkpoints.path.display()
                ));
                None
            }
        }
    }

    /// After `step` steps: writes a checkpoint if the interval says one is due. Never after the
    /// last step: the outputs follow at once.
    pub fn after_step<S: LoopState>(&mut self, optimiser: &mut Optimiser, step: u64, state: &S) {
        if step < self.total_steps
            && self
                .checkpoints
                .interval
                .due(step, self.saved_at.1.elapsed())
        {
            self.save(optimiser, step, state);
            self.saved_at = (step, Instant::now());
        }
    }

    /// The run is stopped (a time limit's SIGTERM, Ctrl-C) after `step` steps: keeps what was
    /// done since the last checkpoint, unless checkpoints are `off`.
    pub fn at_stop<S: LoopState>(&self, optimiser: &mut Optimiser, step: u64, state: &S) {
        if self.checkpoints.interval != Interval::Off && step > self.saved_at.0 {
            self.save(optimiser, step, state);
        }
    }

    /// A failure to write a checkpoint costs only the resume, so it is logged and training goes
    /// on.
    fn save<S: LoopState>(&self, optimiser: &mut Optimiser, step: u64, state: &S) {
        let training = self.training(optimiser);
        let path = &self.checkpoints.path;
        match self.checkpoints.save(&training, step, state) {
            Ok(()) => tracing::debug!(step, path = %path.display(), "checkpoint written"),
            Err(e) => (self.note)(&format!("could not write a checkpoint at step {step}: {e}")),
        }
    }
}

/// Checks the magic, the hash and the lengths; returns the header and the tensor bytes.
fn parse(bytes: &[u8]) -> std::result::Result<(Header, &[u8]), String> {
    let fixed = MAGIC.len() + 8;
    if bytes.len() < fixed + HASH_LEN || &bytes[..MAGIC.len()] != MAGIC {
        return Err("it is not an umdflow training checkpoint (or it is truncated)".into());
    }
    let (body, hash) = bytes.split_at(bytes.len() - HASH_LEN);
    if blake3::hash(body).as_bytes() != hash {
        return Err("it is truncated or damaged (its hash does not match)".into());
    }
    let mut length = [0u8; 8];
    length.copy_from_slice(&body[MAGIC.len()..fixed]);
    let header_len = usize::try_from(u64::from_le_bytes(length)).unwrap_or(usize::MAX);
    if header_len > body.len() - fixed {
        return Err("its header is longer than the file".into());
    }
    let header: Header = serde_json::from_slice(&body[fixed..fixed + header_len])
        .map_err(|e| format!("its header is not readable: {e}"))?;
    Ok((header, &body[fixed + header_len..]))
}

fn read_tensors(
    saved: &[SavedTensor],
    mut data: &[u8],
    device: &Device,
) -> std::result::Result<HashMap<String, Tensor>, String> {
    let mut tensors = HashMap::new();
    for entry in saved {
        let count: usize = entry.shape.iter().product();
        let len = count * 4;
        if data.len() < len {
            return Err(format!("tensor `{}` is cut short", entry.name));
        }
        let (bytes, rest) = data.split_at(len);
        data = rest;
        let values: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let tensor = Tensor::from_vec(values, entry.shape.as_slice(), device)
            .map_err(|e| format!("tensor `{}`: {e}", entry.name))?;
        tensors.insert(entry.name.clone(), tensor);
    }
    if !data.is_empty() {
        return Err(format!("{} bytes follow the last tensor", data.len()));
    }
    Ok(tensors)
}
