//! End-to-end tests: each drives the built `umdflow` binary on a scratch project.

mod support;

mod caching;
mod commands;
mod concurrency;
mod crash;
mod evaluation;
mod example;
mod ml_pipeline;
mod report;
mod shipped_pipelines;
mod validation;
