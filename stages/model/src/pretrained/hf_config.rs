//! Reading a Hugging Face `config.json`: typed fields with the model class's defaults for absent
//! keys (what `transformers` does when it loads the file), and errors naming the file and field.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::error::{ModelError, Result};

/// One JSON object of a `config.json` (the whole file, or CLIP's nested `vision_config`).
pub(super) struct HfConfig {
    path: PathBuf,
    /// Where the object sits in the file (`""` or `"vision_config."`), for messages.
    at: String,
    fields: Map<String, Value>,
}

impl HfConfig {
    pub(super) fn read(path: &Path) -> Result<Self> {
        let file_error = |message: String| ModelError::File {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| {
            file_error(format!(
                "{e}; a pretrained folder needs the `config.json` that `save_pretrained` writes"
            ))
        })?;
        let value: Value =
            serde_json::from_str(&text).map_err(|e| file_error(format!("not JSON: {e}")))?;
        let Value::Object(fields) = value else {
            return Err(file_error("expected a JSON object".into()));
        };
        Ok(HfConfig {
            path: path.to_path_buf(),
            at: String::new(),
            fields,
        })
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// The nested object `key` (CLIP's `vision_config`), if present.
    pub(super) fn nested(&self, key: &str) -> Result<Option<HfConfig>> {
        match self.fields.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(fields)) => Ok(Some(HfConfig {
                path: self.path.clone(),
                at: format!("{}{key}.", self.at),
                fields: fields.clone(),
            })),
            Some(_) => Err(self.error(key, "an object")),
        }
    }

    pub(super) fn error(&self, key: &str, expected: &str) -> ModelError {
        ModelError::File {
            path: self.path.display().to_string(),
            message: format!(
                "field `{}{key}`: expected {expected}, found {}",
                self.at,
                self.fields
                    .get(key)
                    .map_or("nothing".to_string(), |v| v.to_string())
            ),
        }
    }

    /// A positive integer, or `default` when the key is absent.
    pub(super) fn count(&self, key: &str, default: usize) -> Result<usize> {
        match self.fields.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_u64()
                .filter(|&n| n > 0)
                .map(|n| n as usize)
                .ok_or_else(|| self.error(key, "a positive integer")),
        }
    }

    /// A non-negative integer (a token id), or `default` when the key is absent.
    pub(super) fn index(&self, key: &str, default: usize) -> Result<usize> {
        match self.fields.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_u64()
                .map(|n| n as usize)
                .ok_or_else(|| self.error(key, "a non-negative integer")),
        }
    }

    /// A positive number, or `default` when the key is absent.
    pub(super) fn positive(&self, key: &str, default: f64) -> Result<f64> {
        match self.fields.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_f64()
                .filter(|&x| x > 0.0)
                .ok_or_else(|| self.error(key, "a positive number")),
        }
    }

    /// A boolean, or `default` when the key is absent.
    pub(super) fn flag(&self, key: &str, default: bool) -> Result<bool> {
        match self.fields.get(key) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(self.error(key, "true or false")),
        }
    }

    /// A string, or `default` when the key is absent.
    pub(super) fn text(&self, key: &str, default: &str) -> Result<String> {
        match self.fields.get(key) {
            None => Ok(default.to_string()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(self.error(key, "a string")),
        }
    }

    /// Checks that `key` has one of `allowed` values (absent = `default`), naming what umdflow's
    /// encoder implements when it does not.
    pub(super) fn require(&self, key: &str, default: &str, allowed: &[&str]) -> Result<String> {
        let value = self.text(key, default)?;
        if allowed.contains(&value.as_str()) {
            Ok(value)
        } else {
            Err(ModelError::File {
                path: self.path.display().to_string(),
                message: format!(
                    "field `{}{key}` is `{value}`; umdflow's encoder implements {}",
                    self.at,
                    allowed
                        .iter()
                        .map(|a| format!("`{a}`"))
                        .collect::<Vec<_>>()
                        .join(" or ")
                ),
            })
        }
    }
}
