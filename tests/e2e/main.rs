//! End-to-end tests: each drives the built `umdflow` binary on a scratch project.

mod support;

mod caching;
mod campaign;
mod commands;
mod concurrency;
mod crash;
mod disk_full;
mod evaluation;
mod example;
mod gpu_check;
mod hostile;
mod integrity;
mod ml_pipeline;
mod observed;
mod report;
mod resources;
mod resume;
mod sharing;
mod shipped_pipelines;
mod slurm;
mod tracking;
mod validation;
