//! umdflow's engine: pipeline files become validated, expanded DAGs of content-keyed stage
//! instances, which the scheduler runs against the cache.

pub mod commands;
pub mod content;
pub mod diagnostics;
pub mod disk;
pub mod exit;
pub mod expand;
pub mod keys;
pub mod locate;
pub mod lockfile;
pub mod progress;
pub mod registry;
pub mod report;
pub mod resolve;
pub mod resources;
pub mod scheduler;
pub mod slurm;
pub mod spec;
pub mod summary;
pub mod tracking;
