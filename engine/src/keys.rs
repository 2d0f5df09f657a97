//! Stage keys: a blake3 hash of a canonical encoding of everything that determines a stage's
//! output, and nothing else (no absolute paths, times or host names).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use umdflow_stages::RunSpec;

/// Bumped when the encoding below changes; every key changes with it.
pub const KEY_FORMAT: u32 = 1;

/// What a key is made of. Stored with each cache record so that `plan` can say what changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyComponents {
    pub key_format: u32,
    pub kind: String,
    pub kind_version: u32,
    /// Resolved params (defaults filled in).
    pub params: Map<String, Value>,
    /// The command of a `cmd` stage, axes substituted.
    pub run: Option<RunSpec>,
    /// The stage name and instance id, for kinds that see them (`StageKind::sees_names`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// Input -> that input's output digest. Inputs are named by stage name for kinds that see
    /// names, else by `kind:<kind>` (`kind:<kind>#2` for a second input of the same kind).
    pub inputs: BTreeMap<String, String>,
    /// Dependency path (relative, as written) -> content digest.
    pub deps: BTreeMap<String, String>,
    /// Param naming a path the kind reads (`StageKind::reads`) -> that path's content digest
    /// (`absent` when it does not exist); the param itself is left out of `params`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub reads: BTreeMap<String, String>,
}

/// JSON with object keys sorted at every level, so the encoding never depends on insertion order
/// (or on whether some crate in the build turns on serde_json's `preserve_order`).
pub fn canonical_json(value: &Value) -> String {
    fn write(value: &Value, out: &mut String) {
        match value {
            Value::Object(map) => {
                let sorted: BTreeMap<&String, &Value> = map.iter().collect();
                out.push('{');
                for (i, (key, item)) in sorted.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String(key.clone()).to_string());
                    out.push(':');
                    write(item, out);
                }
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(item, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut out = String::new();
    write(value, &mut out);
    out
}

impl KeyComponents {
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// The key: blake3 of the canonical encoding, hex.
    pub fn key(&self) -> String {
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"umdflow-key\n");
        hasher.update(canonical_json(&self.to_value()).as_bytes());
        hasher.finalize().to_hex().to_string()
    }
}

/// Human-readable differences between the components of an earlier run and now, e.g.
/// `params.ratio: 0.5 -> 0.75` or `deps prep.py changed`.
pub fn describe_changes(old: &KeyComponents, new: &KeyComponents) -> Vec<String> {
    let mut changes = Vec::new();
    if old.key_format != new.key_format {
        changes.push(format!(
            "key format {} -> {}",
            old.key_format, new.key_format
        ));
    }
    if old.kind != new.kind {
        changes.push(format!("kind {} -> {}", old.kind, new.kind));
    } else if old.kind_version != new.kind_version {
        changes.push(format!(
            "kind {} version {} -> {}",
            new.kind, old.kind_version, new.kind_version
        ));
    }
    diff_values(
        "params",
        &Value::Object(old.params.clone()),
        &Value::Object(new.params.clone()),
        &mut changes,
    );
    if old.run != new.run {
        changes.push("run changed".into());
    }
    if old.stage != new.stage || old.instance != new.instance {
        changes.push(format!(
            "renamed from {}",
            old.instance
                .as_deref()
                .or(old.stage.as_deref())
                .unwrap_or("?")
        ));
    }
    for (param, digest) in &new.reads {
        match old.reads.get(param) {
            None => changes.push(format!("params.{param} now read by content")),
            Some(previous) if previous != digest => {
                changes.push(format!("content of params.{param} changed"))
            }
            _ => {}
        }
    }
    for (name, digest) in &new.inputs {
        match old.inputs.get(name) {
            None => changes.push(format!("new input {name}")),
            Some(previous) if previous != digest => {
                changes.push(format!("input {name} output changed"))
            }
            _ => {}
        }
    }
    for name in old.inputs.keys().filter(|n| !new.inputs.contains_key(*n)) {
        changes.push(format!("input {name} removed"));
    }
    for (path, digest) in &new.deps {
        match old.deps.get(path) {
            None => changes.push(format!("new deps {path}")),
            Some(previous) if previous != digest => changes.push(format!("deps {path} changed")),
            _ => {}
        }
    }
    for path in old.deps.keys().filter(|p| !new.deps.contains_key(*p)) {
        changes.push(format!("deps {path} removed"));
    }
    changes
}

fn diff_values(path: &str, old: &Value, new: &Value, out: &mut Vec<String>) {
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for key in keys {
                let sub = format!("{path}.{key}");
                match (a.get(key), b.get(key)) {
                    (Some(x), Some(y)) => diff_values(&sub, x, y, out),
                    (None, Some(y)) => out.push(format!("{sub}: (unset) -> {y}")),
                    (Some(x), None) => out.push(format!("{sub}: {x} -> (unset)")),
                    (None, None) => {}
                }
            }
        }
        (a, b) if a != b => out.push(format!("{path}: {a} -> {b}")),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn components() -> KeyComponents {
        let mut params = Map::new();
        params.insert("ratio".into(), Value::from(0.5));
        params.insert("name".into(), Value::from("x"));
        KeyComponents {
            key_format: KEY_FORMAT,
            kind: "cmd".into(),
            kind_version: 1,
            params,
            run: Some(RunSpec::Argv(vec!["python3".into(), "train.py".into()])),
            stage: None,
            instance: None,
            inputs: [("prep".to_string(), "ab".repeat(32))].into(),
            deps: [("train.py".to_string(), "cd".repeat(32))].into(),
            reads: BTreeMap::new(),
        }
    }

    /// Changing this value means every cached result of every user becomes a miss: only do it on
    /// purpose, together with a KEY_FORMAT bump and a note in docs/caching.md.
    #[test]
    fn golden_key() {
        assert_eq!(
            components().key(),
            "4188dd3e2c2191a21ac7acb42a07a62a4c58dd8c59188d1b54af05659fe36966"
        );
    }

    #[test]
    fn canonical_json_sorts_keys() {
        let value: Value =
            serde_json::from_str(r#"{"b":1,"a":{"d":[1,{"z":0,"y":1}],"c":null}}"#).unwrap();
        assert_eq!(
            canonical_json(&value),
            r#"{"a":{"c":null,"d":[1,{"y":1,"z":0}]},"b":1}"#
        );
    }

    #[test]
    fn every_component_changes_the_key() {
        let base = components().key();
        let mut c = components();
        c.params.insert("ratio".into(), Value::from(0.75));
        assert_ne!(c.key(), base);
        let mut c = components();
        c.kind_version = 2;
        assert_ne!(c.key(), base);
        let mut c = components();
        c.inputs.insert("prep".into(), "ef".repeat(32));
        assert_ne!(c.key(), base);
        let mut c = components();
        c.deps.insert("train.py".into(), "01".repeat(32));
        assert_ne!(c.key(), base);
        let mut c = components();
        c.run = Some(RunSpec::Shell("python3 train.py".into()));
        assert_ne!(c.key(), base);
        let mut c = components();
        c.stage = Some("train".into());
        assert_ne!(c.key(), base);
        let mut c = components();
        c.instance = Some("train[seed=1]".into());
        assert_ne!(c.key(), base);
        let mut c = components();
        c.reads.insert("path".into(), "ef".repeat(32));
        assert_ne!(c.key(), base);
    }

    #[test]
    fn changes_are_described_field_by_field() {
        let old = components();
        let mut new = components();
        new.params.insert("ratio".into(), Value::from(0.75));
        new.deps.insert("train.py".into(), "01".repeat(32));
        assert_eq!(
            describe_changes(&old, &new),
            vec!["params.ratio: 0.5 -> 0.75", "deps train.py changed"]
        );
    }
}
