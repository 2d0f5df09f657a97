//! Every stage kind umdflow ships, by the name used in `kind:`. It lives in the binary so that the
//! engine library depends on no ML crate.

use std::sync::Arc;

use umdflow_data::IngestKind;
use umdflow_engine::registry::Registry;
use umdflow_model::{MaskKind, PretrainKind};
use umdflow_stages::CmdKind;
use umdflow_tune::{CalibrateKind, CoordinateTuneKind, EvaluateKind, ProbeKind};

/// The kinds that ship with umdflow.
pub fn builtin() -> Registry {
    Registry::new(vec![
        Arc::new(CmdKind),
        Arc::new(IngestKind),
        Arc::new(MaskKind),
        Arc::new(PretrainKind),
        Arc::new(CalibrateKind),
        Arc::new(CoordinateTuneKind),
        Arc::new(EvaluateKind),
        Arc::new(ProbeKind),
    ])
}
