//! Every stage kind umdflow knows, by the name used in `kind:`.

use std::sync::Arc;

use umdflow_data::IngestKind;
use umdflow_model::{MaskKind, PretrainKind};
use umdflow_stages::{CmdKind, StageKind};
use umdflow_tune::{CalibrateKind, CoordinateTuneKind, EvaluateKind, ProbeKind};

pub struct Registry {
    kinds: Vec<Arc<dyn StageKind>>,
}

impl Registry {
    /// The kinds that ship with umdflow.
    pub fn builtin() -> Registry {
        Registry {
            kinds: vec![
                Arc::new(CmdKind),
                Arc::new(IngestKind),
                Arc::new(MaskKind),
                Arc::new(PretrainKind),
                Arc::new(CalibrateKind),
                Arc::new(CoordinateTuneKind),
                Arc::new(EvaluateKind),
                Arc::new(ProbeKind),
            ],
        }
    }

    pub fn get(&self, name: &str) -> Option<Arc<dyn StageKind>> {
        self.kinds.iter().find(|kind| kind.name() == name).cloned()
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.kinds.iter().map(|kind| kind.name()).collect()
    }

    pub fn all(&self) -> &[Arc<dyn StageKind>] {
        &self.kinds
    }
}
