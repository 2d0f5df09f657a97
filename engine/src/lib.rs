//! umdflow's engine: pipeline files become validated, expanded DAGs of content-keyed stage
//! instances, which the scheduler runs against the cache.

pub mod diagnostics;
pub mod expand;
pub mod keys;
pub mod locate;
pub mod registry;
pub mod spec;
pub mod commands;
pub mod progress;
pub mod resolve;
pub mod scheduler;
pub mod summary;
