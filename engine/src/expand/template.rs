//! `${axis}` references in params, `run` and `deps`, and their substitution.

use serde_json::Value;

/// `0.5` -> `0.5`, `"adam"` -> `adam`: how a value shows in ids and in interpolated strings.
pub fn display_value(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Object(map) if map.get("name").is_some_and(Value::is_string) => {
            map["name"].as_str().unwrap_or_default().to_string()
        }
        other => other.to_string(),
    }
}

/// Names inside `${...}` in a string.
pub(super) fn references(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        match after.find('}') {
            Some(end) => {
                names.push(after[..end].trim().to_string());
                rest = &after[end + 1..];
            }
            None => break,
        }
    }
    names
}

/// Every string in a value, with its YAML path.
pub(super) fn strings_in<'a>(value: &'a Value, path: String, out: &mut Vec<(String, &'a str)>) {
    match value {
        Value::String(text) => out.push((path, text)),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                strings_in(item, format!("{path}[{i}]"), out);
            }
        }
        Value::Object(map) => {
            for (key, item) in map {
                strings_in(item, format!("{path}.{key}"), out);
            }
        }
        _ => {}
    }
}

pub(super) fn substitute_str(text: &str, assignment: &[(String, Value)]) -> Value {
    let lookup = |name: &str| -> Option<&Value> {
        if let Some((_, value)) = assignment.iter().find(|(label, _)| label == name) {
            return Some(value);
        }
        // `${arm.lr}` when the stage also varies over the whole `arm`.
        let (axis, field) = name.split_once('.')?;
        assignment
            .iter()
            .find(|(label, _)| label == axis)
            .and_then(|(_, value)| value.get(field))
    };
    // A string that is exactly `${axis}` takes the axis value with its type (0.5 stays a number).
    if let [name] = references(text).as_slice()
        && text.trim() == format!("${{{name}}}")
        && let Some(value) = lookup(name)
    {
        return value.clone();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find('}') {
            Some(end) => {
                let name = after[..end].trim();
                match lookup(name) {
                    Some(value) => out.push_str(&display_value(value)),
                    None => out.push_str(&rest[start..start + 3 + end]),
                }
                rest = &after[end + 1..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    Value::String(out)
}

pub fn substitute(value: &Value, assignment: &[(String, Value)]) -> Value {
    match value {
        Value::String(text) => substitute_str(text, assignment),
        Value::Array(items) => {
            Value::Array(items.iter().map(|v| substitute(v, assignment)).collect())
        }
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), substitute(v, assignment)))
                .collect(),
        ),
        other => other.clone(),
    }
}

pub(super) fn substitute_text(text: &str, assignment: &[(String, Value)]) -> String {
    display_value(&substitute_str(text, assignment))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_string_references_keep_their_type() {
        let assignment = vec![("ratio".to_string(), Value::from(0.5))];
        assert_eq!(
            substitute(&Value::from("${ratio}"), &assignment),
            Value::from(0.5)
        );
        assert_eq!(
            substitute(&Value::from("r_${ratio}_x"), &assignment),
            Value::from("r_0.5_x")
        );
        assert_eq!(
            substitute(&Value::from("${other}"), &assignment),
            Value::from("${other}")
        );
    }

    #[test]
    fn references_are_found() {
        assert_eq!(references("a ${x} b ${ y }"), vec!["x", "y"]);
        assert!(references("no refs, $HOME").is_empty());
    }
}
