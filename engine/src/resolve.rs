//! Working out each instance's key and whether the cache already holds it, and explaining why
//! not. `plan` and `show` use this alone; `run` uses it for the up-front pass and again whenever
//! an input finishes (early cutoff: a rerun that produced the same bytes is a cache hit below).

use std::collections::{BTreeMap, HashMap};

use umdflow_cache::{Cache, CacheError, Found, Record};

use crate::content::{self, StatCache};
use crate::diagnostics::Invalid;
use crate::expand::Expanded;
use crate::keys::{KEY_FORMAT, KeyComponents, describe_changes};
use crate::spec::Source;

/// Content digests of every `deps` path and every path a kind reads, computed once per run.
pub struct DepDigests(HashMap<String, String>);

/// The digest keyed for a path a kind reads that does not exist (the stage then fails and says
/// so, or, if the kind allows it, the result is keyed as made without it).
const ABSENT: &str = "absent";

impl DepDigests {
    /// Hashes every dependency and read path; a missing dependency is a pipeline error pointing
    /// at its line. `stats` spares hashing files that did not change since the last run.
    pub fn compute(
        source: &Source,
        expanded: &Expanded,
        stats: &mut StatCache,
    ) -> Result<DepDigests, Invalid> {
        let mut reporter = source.reporter();
        let mut digests = HashMap::new();
        for instance in &expanded.instances {
            let stage = &expanded.stages[instance.stage];
            for (i, dep) in instance.deps.iter().enumerate() {
                if digests.contains_key(dep) {
                    continue;
                }
                match content::digest(&expanded.dir.join(dep), stats) {
                    Ok(digest) => {
                        digests.insert(dep.clone(), digest);
                    }
                    Err(err) => reporter.at_value(
                        &format!("stages.{}.deps[{i}]", stage.name),
                        format!(
                            "dependency `{dep}` of stage `{}` cannot be read: {err}",
                            stage.name
                        ),
                    ),
                }
            }
            for read in stage.kind.reads(&instance.params) {
                if digests.contains_key(&read.path) {
                    continue;
                }
                let digest = match content::digest(&expanded.dir.join(&read.path), stats) {
                    Ok(digest) => digest,
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => ABSENT.to_string(),
                    Err(err) => {
                        reporter.at_value(
                            &format!("stages.{}.params.{}", stage.name, read.param),
                            format!(
                                "stage `{}` reads `{}`, which cannot be read: {err}",
                                stage.name, read.path
                            ),
                        );
                        continue;
                    }
                };
                digests.insert(read.path, digest);
            }
        }
        reporter.finish()?;
        stats.save();
        Ok(DepDigests(digests))
    }

    fn get(&self, path: &str) -> String {
        self.0.get(path).cloned().unwrap_or_default()
    }
}

/// The components of an instance's key, given its inputs' output digests (in input order).
pub fn components(
    expanded: &Expanded,
    index: usize,
    deps: &DepDigests,
    input_digests: &[&str],
) -> KeyComponents {
    let instance = &expanded.instances[index];
    let stage = &expanded.stages[instance.stage];
    let sees_names = stage.kind.sees_names();
    let mut inputs: BTreeMap<String, String> = BTreeMap::new();
    for (&input, digest) in instance.inputs.iter().zip(input_digests) {
        let input_stage = &expanded.stages[expanded.instances[input].stage];
        let name = if sees_names {
            input_stage.name.clone()
        } else {
            // The kind finds its inputs by kind (the first of each kind), so that is their name.
            let base = format!("kind:{}", input_stage.kind.name());
            let mut name = base.clone();
            let mut count = 1;
            while inputs.contains_key(&name) {
                count += 1;
                name = format!("{base}#{count}");
            }
            name
        };
        inputs.insert(name, digest.to_string());
    }
    let reads = stage.kind.reads(&instance.params);
    let mut params = instance.params.clone();
    for read in &reads {
        remove_read_param(&mut params, &read.param);
    }
    for unkeyed in stage.kind.unkeyed_params() {
        params.remove(*unkeyed);
    }
    KeyComponents {
        key_format: KEY_FORMAT,
        kind: stage.kind.name().to_string(),
        kind_version: stage.kind.version(),
        params,
        run: instance.run.clone(),
        stage: sees_names.then(|| stage.name.clone()),
        instance: sees_names.then(|| instance.id.clone()),
        inputs,
        deps: instance
            .deps
            .iter()
            .map(|dep| (dep.clone(), deps.get(dep)))
            .collect(),
        reads: reads
            .into_iter()
            .map(|read| (read.param, deps.get(&read.path)))
            .collect(),
    }
}

/// Takes a read path's param out of the keyed params; `a.b` names key `b` of the object param
/// `a` (e.g. `pretrain`'s `init.image`).
fn remove_read_param(params: &mut umdflow_stages::Params, name: &str) {
    match name.split_once('.') {
        Some((outer, inner)) => {
            if let Some(serde_json::Value::Object(fields)) = params.get_mut(outer) {
                fields.remove(inner);
            }
        }
        None => {
            params.remove(name);
        }
    }
}

/// What the up-front pass found for one instance.
#[derive(Debug, Clone)]
pub enum Resolution {
    /// In the cache and intact.
    Cached(Box<Record>),
    /// Must run; the key is known when every input is cached.
    Run { key: Option<String>, reason: String },
}

/// Checks a looked-up record's blobs; a damaged record (and everything computed from it) is
/// forgotten by the check, so the stage recomputes.
pub fn usable(cache: &Cache, found: Found) -> Result<Record, String> {
    let damage = cache.check(&found);
    if damage.is_empty() {
        return Ok(found.record);
    }
    let described: Vec<String> = damage.iter().map(|d| d.to_string()).collect();
    Err(format!(
        "cached output damaged, recomputing: {}",
        described.join("; ")
    ))
}

/// Explains a cache miss against the earlier runs of the same stage.
pub struct Explainer<'a> {
    cache: &'a Cache,
    pipeline: String,
    history: HashMap<String, Vec<Record>>,
}

impl<'a> Explainer<'a> {
    pub fn new(cache: &'a Cache, pipeline: &str) -> Self {
        Explainer {
            cache,
            pipeline: pipeline.to_string(),
            history: HashMap::new(),
        }
    }

    pub fn explain(&mut self, stage: &str, instance_id: &str, now: &KeyComponents) -> String {
        let history = self.history.entry(stage.to_string()).or_insert_with(|| {
            self.cache
                .history(&self.pipeline, stage)
                .unwrap_or_default()
        });
        let comparable: Vec<(&Record, KeyComponents)> = history
            .iter()
            .rev()
            .filter_map(|record| {
                serde_json::from_value::<KeyComponents>(record.components.clone())
                    .ok()
                    .map(|c| (record, c))
            })
            .collect();
        // The same instance's last run if there is one, else the closest earlier run of the stage.
        let same = comparable
            .iter()
            .find(|(record, _)| record.instance == instance_id);
        let closest = same.or_else(|| {
            comparable
                .iter()
                .min_by_key(|(_, components)| describe_changes(components, now).len())
        });
        match closest {
            None => "not run before".to_string(),
            Some((record, old)) => {
                let changes = describe_changes(old, now);
                let changes = if changes.is_empty() {
                    "no recorded difference (the earlier result was removed from the cache)"
                        .to_string()
                } else {
                    changes.join(", ")
                };
                if record.instance == instance_id {
                    changes
                } else {
                    format!("new instance; vs {}: {changes}", record.instance)
                }
            }
        }
    }
}

/// The up-front pass: keys and cache state of every instance whose inputs are all cached, in
/// waves of one batched index read each; everything below a miss is `Run` ("input X reruns").
pub fn resolve_all(
    expanded: &Expanded,
    cache: &Cache,
    deps: &DepDigests,
    forced: &dyn Fn(usize) -> bool,
) -> Result<Vec<Resolution>, CacheError> {
    let count = expanded.instances.len();
    let mut resolved: Vec<Option<Resolution>> = vec![None; count];
    let mut explainer = Explainer::new(cache, &expanded.name);
    loop {
        // Instances are created after their inputs, so one forward sweep per wave suffices.
        let mut wave: Vec<(usize, KeyComponents, String)> = Vec::new();
        for index in 0..count {
            if resolved[index].is_some() {
                continue;
            }
            let instance = &expanded.instances[index];
            let mut digests = Vec::new();
            let mut blocked = None;
            let mut waiting = false;
            for &input in &instance.inputs {
                match &resolved[input] {
                    Some(Resolution::Cached(record)) => digests.push(record.output_digest.as_str()),
                    Some(Resolution::Run { .. }) => {
                        blocked = Some(input);
                        break;
                    }
                    None => {
                        waiting = true;
                        break;
                    }
                }
            }
            if let Some(input) = blocked {
                resolved[index] = Some(Resolution::Run {
                    key: None,
                    reason: format!("input {} reruns", expanded.instances[input].id),
                });
                continue;
            }
            if waiting {
                continue;
            }
            let components = components(expanded, index, deps, &digests);
            let key = components.key();
            wave.push((index, components, key));
        }
        if wave.is_empty() {
            break;
        }
        tracing::debug!(instances = wave.len(), "looking up a wave of keys");
        let keys: Vec<&str> = wave.iter().map(|(_, _, key)| key.as_str()).collect();
        let mut found = cache.read(|reader| reader.lookup(&keys))?;
        for (index, components, key) in wave {
            let instance = &expanded.instances[index];
            let stage = &expanded.stages[instance.stage];
            resolved[index] = Some(match found.remove(&key) {
                _ if forced(index) => Resolution::Run {
                    key: Some(key),
                    reason: "forced (--force)".into(),
                },
                Some(hit) => match usable(cache, hit) {
                    Ok(record) => Resolution::Cached(Box::new(record)),
                    Err(reason) => Resolution::Run {
                        key: Some(key),
                        reason,
                    },
                },
                None => Resolution::Run {
                    reason: explainer.explain(&stage.name, &instance.id, &components),
                    key: Some(key),
                },
            });
        }
    }
    Ok(resolved
        .into_iter()
        .map(|r| {
            r.unwrap_or(Resolution::Run {
                key: None,
                reason: "not resolved".into(),
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dotted_read_param_leaves_the_key_and_its_siblings_stay() {
        let mut params: umdflow_stages::Params = serde_json::from_str(
            r#"{"path": "data", "init": {"image": "clip", "text": "roberta", "image_layers": 11}}"#,
        )
        .unwrap();
        remove_read_param(&mut params, "init.image");
        remove_read_param(&mut params, "path");
        assert_eq!(
            serde_json::Value::Object(params),
            serde_json::json!({"init": {"text": "roberta", "image_layers": 11}})
        );
    }
}
