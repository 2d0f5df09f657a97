//! The stage kinds a pipeline may name in `kind:`. The engine knows no kind itself: the binary
//! builds the registry (`umdflow::registry::builtin`) and passes it in.

use std::sync::Arc;

use umdflow_stages::StageKind;

pub struct Registry {
    kinds: Vec<Arc<dyn StageKind>>,
}

impl Registry {
    pub fn new(kinds: Vec<Arc<dyn StageKind>>) -> Registry {
        Registry { kinds }
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
