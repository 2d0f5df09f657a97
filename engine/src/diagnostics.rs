//! Errors in a pipeline file, each pointing at a file, line and column (or at the `--set` that
//! introduced the value). An invalid pipeline exits with code 2 before anything runs.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::locate::{Locator, Position};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    pub position: Option<Position>,
    /// Set when the value came from the command line, e.g. `--set sweep.ratio=[]`.
    pub origin: Option<String>,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(origin) = &self.origin {
            write!(f, " ({origin})")?;
        } else if let Some(position) = self.position {
            write!(f, ":{}:{}", position.line, position.column)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// The pipeline is invalid; every problem found is listed.
#[derive(Debug, Clone)]
pub struct Invalid(pub Vec<Diagnostic>);

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, diagnostic) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "error: {diagnostic}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Invalid {}

/// Builds diagnostics for one pipeline file, resolving YAML paths to positions.
pub struct Reporter<'a> {
    pub file: &'a Path,
    pub locator: &'a Locator,
    /// `(yaml path, the --set text)` for values given on the command line.
    pub overrides: &'a [(String, String)],
    pub found: Vec<Diagnostic>,
}

impl<'a> Reporter<'a> {
    pub fn new(file: &'a Path, locator: &'a Locator, overrides: &'a [(String, String)]) -> Self {
        Reporter {
            file,
            locator,
            overrides,
            found: Vec::new(),
        }
    }

    fn origin(&self, path: &str) -> Option<String> {
        self.overrides
            .iter()
            .filter(|(overridden, _)| {
                path == overridden
                    || path.starts_with(&format!("{overridden}."))
                    || path.starts_with(&format!("{overridden}["))
            })
            .map(|(_, text)| format!("--set {text}"))
            .next_back()
    }

    fn push(&mut self, path: &str, position: Option<Position>, message: String) {
        let diagnostic = Diagnostic {
            file: self.file.to_path_buf(),
            origin: self.origin(path),
            position,
            message,
        };
        if !self.found.contains(&diagnostic) {
            self.found.push(diagnostic);
        }
    }

    /// A problem with the value at `path`.
    pub fn at_value(&mut self, path: &str, message: impl Into<String>) {
        let position = self.locator.value(path);
        self.push(path, position, message.into());
    }

    /// A problem with the mapping entry at `path` as a whole (points at its key).
    pub fn at_key(&mut self, path: &str, message: impl Into<String>) {
        let position = self.locator.key(path);
        self.push(path, position, message.into());
    }

    pub fn is_clean(&self) -> bool {
        self.found.is_empty()
    }

    pub fn finish(self) -> Result<(), Invalid> {
        if self.found.is_empty() {
            Ok(())
        } else {
            Err(Invalid(self.found))
        }
    }
}
