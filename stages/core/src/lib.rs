//! umdflow's stage interface and the generic `cmd` stage kind.
//!
//! ML stage kinds live in sibling crates (`umdflow-data`, `umdflow-model`, `umdflow-tune`) and implement
//! [`StageKind`]; the engine lists every kind in its registry.

pub mod api;
pub mod cmd;
pub mod params;
pub mod resume;

pub use api::{
    Gpu, GpuDemand, InputArtifact, NoProgress, Params, Problem, ProgressSink, ReadPath, RunSpec,
    StageContext, StageDecl, StageError, StageKind,
};
pub use cmd::CmdKind;
pub use resume::{Interval, Resume};
