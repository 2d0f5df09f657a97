//! Progress bars: one for the whole run, one per running stage (fed through the stage
//! interface's `ProgressSink`). Nothing is drawn when stderr is not a terminal or with `--json`.

use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use umdflow_stages::ProgressSink;

pub struct Progress {
    multi: MultiProgress,
    overall: ProgressBar,
}

fn stage_style() -> ProgressStyle {
    ProgressStyle::with_template("  {spinner} {prefix} {elapsed:>4} {wide_msg}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
}

fn stage_bar_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "  {spinner} {prefix} [{bar:25}] {pos}/{len} {elapsed:>4} {wide_msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ")
}

impl Progress {
    pub fn new(total: u64, visible: bool) -> Progress {
        let target = if visible {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let multi = MultiProgress::with_draw_target(target);
        let overall = multi.add(ProgressBar::new(total));
        overall.set_style(
            ProgressStyle::with_template(
                "{prefix:.bold} [{bar:30}] {pos}/{len} stages {elapsed} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        overall.set_prefix("umdflow");
        Progress { multi, overall }
    }

    /// A stage finished (or was found cached).
    pub fn advance(&self, summary: &str) {
        self.overall.inc(1);
        self.overall.set_message(summary.to_string());
    }

    /// A bar for a running stage.
    pub fn stage(&self, id: &str) -> StageBar {
        let bar = self
            .multi
            .insert_before(&self.overall, ProgressBar::new_spinner());
        bar.set_style(stage_style());
        bar.set_prefix(id.to_string());
        bar.enable_steady_tick(Duration::from_millis(200));
        StageBar { bar }
    }

    /// A line above the bars (or on stderr when they are hidden).
    pub fn note(&self, line: &str) {
        if self.multi.is_hidden() {
            eprintln!("{line}");
        } else {
            let _ = self.multi.println(line);
        }
    }

    pub fn finish(&self) {
        self.overall.finish_and_clear();
        let _ = self.multi.clear();
    }
}

pub struct StageBar {
    bar: ProgressBar,
}

impl StageBar {
    pub fn done(self) {
        self.bar.finish_and_clear();
    }
}

impl ProgressSink for StageBar {
    fn set_total(&self, total: u64) {
        self.bar.set_style(stage_bar_style());
        self.bar.set_length(total);
    }

    fn set_position(&self, done: u64) {
        self.bar.set_position(done);
    }

    fn set_message(&self, message: &str) {
        self.bar.set_message(message.to_string());
    }
}
