//! Typed parameters for stage kinds.
//!
//! A kind declares its parameters as a serde struct with `#[serde(default, deny_unknown_fields)]`;
//! [`resolve_typed`] checks a pipeline's params against it and returns them with every default
//! filled in (that completed map is what enters the key), and [`typed`] reads them back in `run`.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::api::{Params, Problem, StageError};

/// Checks `params` against `T` and returns them completed with `T`'s defaults.
pub fn resolve_typed<T: DeserializeOwned + Serialize>(
    params: Params,
) -> Result<Params, Vec<Problem>> {
    resolve_with_value::<T>(params).map(|(completed, _)| completed)
}

/// [`resolve_typed`], also returning the typed value it read, for kinds whose `resolve_params`
/// checks fields further.
pub fn resolve_with_value<T: DeserializeOwned + Serialize>(
    params: Params,
) -> Result<(Params, T), Vec<Problem>> {
    let value: T = from_params(params).map_err(|problem| vec![problem])?;
    match serde_json::to_value(&value) {
        Ok(Value::Object(map)) => Ok((map, value)),
        Ok(other) => Err(vec![Problem::new(
            "params",
            format!("internal: parameters serialised to {other} instead of a map"),
        )]),
        Err(err) => Err(vec![Problem::new("params", err.to_string())]),
    }
}

/// Reads resolved params as `T` inside `run`.
pub fn typed<T: DeserializeOwned>(params: &Params) -> Result<T, StageError> {
    from_params(params.clone())
        .map_err(|problem| StageError::failed(format!("{}: {}", problem.field, problem.message)))
}

fn from_params<T: DeserializeOwned>(params: Params) -> Result<T, Problem> {
    let mut track = serde_path_to_error::Track::new();
    let de = serde_path_to_error::Deserializer::new(Value::Object(params), &mut track);
    T::deserialize(de).map_err(|err: serde_json::Error| {
        let path = track.path().to_string();
        let field = if path == "." || path.is_empty() {
            "params".to_string()
        } else {
            format!("params.{path}")
        };
        Problem::new(field, err.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Serialize, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct Example {
        ratio: f64,
        steps: u32,
    }

    impl Default for Example {
        fn default() -> Self {
            Example {
                ratio: 0.5,
                steps: 10,
            }
        }
    }

    fn params(json: Value) -> Params {
        json.as_object().cloned().unwrap()
    }

    #[test]
    fn defaults_are_filled_in() {
        let resolved = resolve_typed::<Example>(params(serde_json::json!({"steps": 3}))).unwrap();
        assert_eq!(
            Value::Object(resolved),
            serde_json::json!({"ratio": 0.5, "steps": 3})
        );
    }

    #[test]
    fn a_wrong_type_names_the_field() {
        let problems =
            resolve_typed::<Example>(params(serde_json::json!({"steps": "many"}))).unwrap_err();
        assert_eq!(problems[0].field, "params.steps");
        assert!(
            problems[0].message.contains("invalid type"),
            "{}",
            problems[0].message
        );
    }

    #[test]
    fn an_unknown_param_is_reported() {
        let problems =
            resolve_typed::<Example>(params(serde_json::json!({"stepz": 3}))).unwrap_err();
        assert!(
            problems[0].message.contains("unknown field `stepz`"),
            "{}",
            problems[0].message
        );
    }
}
