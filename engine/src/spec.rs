//! The pipeline file: its YAML form, `--set` overrides, and typed parsing with positions.

use std::fmt;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::{MapAccess, Visitor};
use serde_json::{Map, Value};
use umdflow_stages::RunSpec;

use crate::diagnostics::{Diagnostic, Invalid, Reporter};
use crate::locate::{Locator, Position};

/// A map that keeps the file's order (stages and axes are listed in the order written).
#[derive(Debug, Clone, Default)]
pub struct Ordered<V>(pub Vec<(String, V)>);

impl<'de, V: Deserialize<'de>> Deserialize<'de> for Ordered<V> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct OrderedVisitor<V>(PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for OrderedVisitor<V> {
            type Value = Ordered<V>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping")
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
                Ok(Ordered(Vec::new()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries: Vec<(String, V)> = Vec::new();
                while let Some((key, value)) = map.next_entry::<String, V>()? {
                    if entries.iter().any(|(existing, _)| existing == &key) {
                        return Err(serde::de::Error::custom(format!("`{key}` is given twice")));
                    }
                    entries.push((key, value));
                }
                Ok(Ordered(entries))
            }
        }
        deserializer.deserialize_map(OrderedVisitor(PhantomData))
    }
}

/// How sweep axes combine into points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Design {
    /// Every combination of every axis.
    #[default]
    Grid,
    /// The i-th value of every axis together (all axes equally long).
    Zip,
    /// The `baseline`, plus one point per other value of each axis with the rest at baseline.
    OneAtATime,
}

/// `seeds: 3` (0, 1, 2) or `seeds: [0, 7, 42]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Seeds {
    Count(u64),
    List(Vec<Value>),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStage {
    pub kind: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub inputs: Vec<String>,
    #[serde(default)]
    pub run: Option<RunSpec>,
    #[serde(default)]
    pub deps: Vec<String>,
    #[serde(default)]
    pub params: Map<String, Value>,
    /// What an instance needs while it runs (not in its key).
    #[serde(default)]
    pub resources: Option<crate::resources::RawResources>,
}

/// One loss curve (or any per-step series) to plot from a stage's CSV output.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCurve {
    /// The stage whose instances wrote the file.
    pub stage: String,
    /// A CSV file in that stage's output, with a header row.
    pub file: String,
    /// Column names for the x and y values.
    pub x: String,
    pub y: String,
    #[serde(default)]
    pub title: Option<String>,
}

/// What `umdflow report` tabulates and plots.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReport {
    /// The stage whose metrics fill the table (one row per sweep point, seeds as replicates).
    #[serde(default)]
    pub stage: Option<String>,
    /// Or several stages (e.g. one evaluation per task): their metrics are merged per point,
    /// each prefixed with its stage name (`eval_vqa.vqa.overall`).
    #[serde(default)]
    pub stages: Vec<String>,
    /// Metric columns in order (nested metrics are named with dots: `vqa.overall`); default: all.
    #[serde(default)]
    pub metrics: Vec<String>,
    /// The row that paired differences are taken against; default: the design's `baseline`.
    #[serde(default)]
    pub baseline: Option<Map<String, Value>>,
    /// An axis to plot each metric against.
    #[serde(default)]
    pub x_axis: Option<String>,
    #[serde(default)]
    pub curves: Vec<RawCurve>,
}

impl RawReport {
    /// The stages whose metrics fill the table, and whether their names prefix the metrics.
    pub fn metric_stages(&self) -> (Vec<String>, bool) {
        match &self.stage {
            Some(stage) => (vec![stage.clone()], false),
            None => (self.stages.clone(), true),
        }
    }
}

/// Where `umdflow run` runs the stages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ExecutorKind {
    /// On this machine, `--jobs` at a time.
    #[default]
    Local,
    /// As Slurm jobs, one per instance, through `sbatch` (docs/scaling.md).
    Slurm,
}

/// `executor:`: the default executor of `umdflow run` and the Slurm settings. Never part of a
/// key: where a stage runs does not change what it computes.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawExecutor {
    /// The executor `run` uses when `--executor` is not given.
    #[serde(default)]
    pub kind: ExecutorKind,
    /// `sbatch --partition`.
    #[serde(default)]
    pub partition: Option<String>,
    /// `sbatch --account`.
    #[serde(default)]
    pub account: Option<String>,
    /// `sbatch --qos`.
    #[serde(default)]
    pub qos: Option<String>,
    /// `sbatch --constraint`.
    #[serde(default)]
    pub constraint: Option<String>,
    /// More `sbatch` arguments, passed as given (`["--time=02:00:00", "--mem=8G"]`).
    #[serde(default)]
    pub sbatch_args: Vec<String>,
    /// Seconds between two looks at the queue (one `squeue` each).
    #[serde(default)]
    pub poll_seconds: Option<f64>,
    /// How often a job that ended `TIMEOUT`, `PREEMPTED` or `NODE_FAIL` is submitted again (it
    /// resumes from its checkpoint); 0: never. Default 2.
    #[serde(default)]
    pub max_resubmits: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPipeline {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub seeds: Option<Seeds>,
    #[serde(default)]
    pub sweep: Ordered<Vec<Value>>,
    #[serde(default)]
    pub design: Design,
    #[serde(default)]
    pub baseline: Option<Map<String, Value>>,
    pub stages: Ordered<RawStage>,
    #[serde(default)]
    pub report: Option<RawReport>,
    #[serde(default)]
    pub executor: Option<RawExecutor>,
}

/// A pipeline file as read, before validation.
pub struct Source {
    pub file: PathBuf,
    /// The folder holding the file: relative paths resolve against it.
    pub dir: PathBuf,
    pub locator: Locator,
    /// `(yaml path, the --set text)` per override.
    pub overrides: Vec<(String, String)>,
    pub raw: RawPipeline,
}

impl Source {
    pub fn reporter(&self) -> Reporter<'_> {
        Reporter::new(&self.file, &self.locator, &self.overrides)
    }
}

const TOP_LEVEL: [&str; 9] = [
    "name",
    "description",
    "seeds",
    "sweep",
    "design",
    "baseline",
    "stages",
    "report",
    "executor",
];

/// `--set preset=NAME` applies the overrides listed under `presets: NAME:` in the file.
const PRESET: &str = "preset";

/// A preset: `(override path, value)` in the order written.
type Preset = Vec<(String, serde_yaml::Value)>;

/// Removes `presets:` from the document (it is not part of the pipeline once applied) and
/// checks its shape: preset names mapping to `PATH: VALUE` overrides, as `--set` takes them.
/// An error is `(yaml path of the offending value, message)`.
fn take_presets(
    document: &mut serde_yaml::Value,
) -> Result<Vec<(String, Preset)>, (String, String)> {
    let serde_yaml::Value::Mapping(top) = document else {
        return Ok(Vec::new());
    };
    let Some(presets) = top.remove("presets") else {
        return Ok(Vec::new());
    };
    let serde_yaml::Value::Mapping(presets) = presets else {
        return Err((
            "presets".into(),
            "`presets:` must map preset names to `PATH: VALUE` overrides".into(),
        ));
    };
    let mut found = Vec::new();
    for (name, entries) in presets {
        let Some(name) = name.as_str().map(str::to_string) else {
            return Err(("presets".into(), "`presets:` names must be strings".into()));
        };
        let serde_yaml::Value::Mapping(entries) = entries else {
            return Err((
                format!("presets.{name}"),
                format!(
                    "`presets.{name}` must map override paths (`corpus.params.count`) to values"
                ),
            ));
        };
        let mut preset = Vec::new();
        for (path, value) in entries {
            let Some(path) = path.as_str().map(str::to_string) else {
                return Err((
                    format!("presets.{name}"),
                    format!("`presets.{name}`: override paths must be strings"),
                ));
            };
            preset.push((path, value));
        }
        found.push((name, preset));
    }
    Ok(found)
}

/// `sweep.ratio` stays as is; `train.params.lr` means `stages.train.params.lr`.
fn override_path(path: &str) -> String {
    let first = path.split(['.', '[']).next().unwrap_or("");
    if TOP_LEVEL.contains(&first) {
        path.to_string()
    } else {
        format!("stages.{path}")
    }
}

fn apply_override(
    document: &mut serde_yaml::Value,
    path: &str,
    value: serde_yaml::Value,
) -> Result<(), String> {
    let mut node = document;
    let segments: Vec<&str> = path.split('.').collect();
    for (i, segment) in segments.iter().enumerate() {
        if segment.is_empty() {
            return Err("empty segment in the path".into());
        }
        let serde_yaml::Value::Mapping(map) = node else {
            return Err(format!("`{}` is not a mapping", segments[..i].join(".")));
        };
        let key = serde_yaml::Value::String(segment.to_string());
        if i + 1 == segments.len() {
            map.insert(key, value);
            return Ok(());
        }
        node = map
            .entry(key)
            .or_insert_with(|| serde_yaml::Value::Mapping(Default::default()));
    }
    Ok(())
}

fn file_error(file: &Path, message: String) -> Invalid {
    Invalid(vec![Diagnostic {
        file: file.to_path_buf(),
        position: None,
        origin: None,
        message,
    }])
}

fn error_at(file: &Path, position: Position, message: String) -> Invalid {
    Invalid(vec![Diagnostic {
        file: file.to_path_buf(),
        position: Some(position),
        origin: None,
        message,
    }])
}

/// An error in a `--set` (or the preset it names): located by the command-line argument.
fn set_error(file: &Path, set: &str, message: String) -> Invalid {
    Invalid(vec![Diagnostic {
        file: file.to_path_buf(),
        position: None,
        origin: Some(format!("--set {set}")),
        message,
    }])
}

/// A pipeline file larger than this is refused before it is parsed (real ones are a few KiB).
pub const MAX_FILE_BYTES: usize = 1 << 20;

/// Line and column (1-based, columns in bytes) of a byte offset.
fn position_at(bytes: &[u8], offset: usize) -> Position {
    let before = &bytes[..offset.min(bytes.len())];
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    Position {
        line: before.iter().filter(|&&b| b == b'\n').count() + 1,
        column: offset - line_start + 1,
    }
}

/// The file as text, refusing (with a position) one that is too large or not UTF-8.
fn read_text(file: &Path) -> Result<String, Invalid> {
    let bytes = std::fs::read(file)
        .map_err(|err| file_error(file, format!("cannot read the pipeline file: {err}")))?;
    if bytes.len() > MAX_FILE_BYTES {
        return Err(error_at(
            file,
            position_at(&bytes, MAX_FILE_BYTES),
            format!(
                "the file is {} bytes; a pipeline file may have at most {MAX_FILE_BYTES} (this is where it crosses the limit)",
                bytes.len()
            ),
        ));
    }
    String::from_utf8(bytes).map_err(|err| {
        let offset = err.utf8_error().valid_up_to();
        error_at(
            file,
            position_at(err.as_bytes(), offset),
            format!("not UTF-8 text: invalid byte at byte offset {offset}"),
        )
    })
}

/// Reads a pipeline file and applies `--set PATH=VALUE` overrides (VALUE is YAML: `0.5`,
/// `[1, 2]`, `text`).
pub fn load(file: &Path, sets: &[String]) -> Result<Source, Invalid> {
    let text = read_text(file)?;
    let locator = Locator::parse(&text)
        .map_err(|refused| error_at(file, refused.position, refused.message))?;
    let start = locator.value("").unwrap_or(Position { line: 1, column: 1 });
    let mut document: serde_yaml::Value = serde_yaml::from_str(&text).map_err(|err| {
        let position = err.location().map_or(start, |l| Position {
            line: l.line(),
            column: l.column(),
        });
        error_at(file, position, format!("not valid YAML: {err}"))
    })?;
    if !matches!(document, serde_yaml::Value::Mapping(_)) {
        return Err(error_at(
            file,
            start,
            "expected a mapping with `name:` and `stages:` at the top".into(),
        ));
    }

    let presets = take_presets(&mut document).map_err(|(path, message)| {
        let position = locator.value(&path).unwrap_or(start);
        error_at(file, position, message)
    })?;
    let mut overrides = Vec::new();
    for set in sets {
        let Some((path, value_text)) = set.split_once('=') else {
            return Err(set_error(
                file,
                set,
                "expected PATH=VALUE, e.g. sweep.ratio=[0.5,0.75]".into(),
            ));
        };
        if path.trim() == PRESET {
            let name = value_text.trim();
            let Some((_, entries)) = presets.iter().find(|(n, _)| n == name) else {
                let known: Vec<&str> = presets.iter().map(|(n, _)| n.as_str()).collect();
                return Err(set_error(
                    file,
                    set,
                    format!(
                        "the file has no preset `{name}` under `presets:`; expected one of: {}",
                        if known.is_empty() {
                            "(none)".to_string()
                        } else {
                            known.join(", ")
                        }
                    ),
                ));
            };
            for (entry, value) in entries {
                let path = override_path(entry);
                apply_override(&mut document, &path, value.clone()).map_err(|message| {
                    set_error(file, set, format!("presets.{name}.{entry}: {message}"))
                })?;
                overrides.push((path, format!("{set} (presets.{name}: {entry})")));
            }
            continue;
        }
        let path = override_path(path.trim());
        let value = serde_yaml::from_str::<serde_yaml::Value>(value_text)
            .unwrap_or_else(|_| serde_yaml::Value::String(value_text.to_string()));
        apply_override(&mut document, &path, value)
            .map_err(|message| set_error(file, set, message))?;
        overrides.push((path, set.clone()));
    }

    let raw: RawPipeline = serde_path_to_error::deserialize(document).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner().to_string();
        let mut reporter = Reporter::new(file, &locator, &overrides);
        let message = describe_type_error(&path, &inner);
        reporter.at_value(if path == "." { "" } else { &path }, message);
        Invalid(reporter.found)
    })?;

    let dir = file
        .parent()
        .map(|p| {
            if p.as_os_str().is_empty() {
                Path::new(".")
            } else {
                p
            }
        })
        .unwrap_or(Path::new("."))
        .to_path_buf();
    Ok(Source {
        file: file.to_path_buf(),
        dir,
        locator,
        overrides,
        raw,
    })
}

/// serde's messages plus the field they are about and, for the usual slips, what was expected.
fn describe_type_error(path: &str, inner: &str) -> String {
    let field = if path == "." || path.is_empty() {
        "the file".to_string()
    } else {
        format!("`{path}`")
    };
    let hint = if path.ends_with(".run") {
        " (`run:` is a shell string or a list of arguments)"
    } else if path == "seeds" {
        " (`seeds:` is a count such as 3, or a list such as [0, 1, 2])"
    } else if path.contains(".resources") {
        " (`resources:` takes `gpus` and `threads` as whole numbers, `memory` such as `16G` and \
         `time` such as `2:00:00`)"
    } else if path.starts_with("sweep") {
        " (each axis under `sweep:` is a list of values)"
    } else {
        ""
    };
    let inner = inner.split(" at line ").next().unwrap_or(inner);
    let inner = if inner.starts_with("data did not match any variant") {
        "wrong type"
    } else {
        inner
    };
    format!("{field}: {inner}{hint}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn override_paths_default_to_stages() {
        assert_eq!(override_path("sweep.ratio"), "sweep.ratio");
        assert_eq!(override_path("train.params.lr"), "stages.train.params.lr");
        assert_eq!(
            override_path("stages.train.params.lr"),
            "stages.train.params.lr"
        );
    }

    fn pipeline_file(dir: &Path, text: &str) -> PathBuf {
        let file = dir.join("p.yaml");
        std::fs::write(&file, text).unwrap();
        file
    }

    const WITH_PRESETS: &str = "name: p
seeds: [0, 1, 2]
stages:
  a: {kind: cmd, run: 'true', params: {n: 100, m: 1}}
presets:
  small:
    seeds: [0]
    a.params.n: 5
";

    #[test]
    fn a_preset_applies_its_overrides_and_later_sets_win() {
        let dir = tempfile::tempdir().unwrap();
        let file = pipeline_file(dir.path(), WITH_PRESETS);
        let sets = ["preset=small".to_string(), "a.params.m=7".to_string()];
        let source = load(&file, &sets).unwrap();
        let a = &source.raw.stages.0[0].1;
        assert_eq!(a.params["n"], 5);
        assert_eq!(a.params["m"], 7);
        assert!(matches!(source.raw.seeds, Some(Seeds::List(ref s)) if s.len() == 1));
        // Overridden values say which preset set them.
        assert!(source.overrides[1].1.contains("presets.small: a.params.n"));
        // A later --set beats the preset.
        let sets = ["preset=small".to_string(), "a.params.n=9".to_string()];
        assert_eq!(load(&file, &sets).unwrap().raw.stages.0[0].1.params["n"], 9);
        // Without the preset the file's values stand.
        assert_eq!(load(&file, &[]).unwrap().raw.stages.0[0].1.params["n"], 100);
    }

    #[test]
    fn an_unknown_preset_lists_the_known_ones() {
        let dir = tempfile::tempdir().unwrap();
        let file = pipeline_file(dir.path(), WITH_PRESETS);
        let Err(err) = load(&file, &["preset=tiny".to_string()]) else {
            panic!("an unknown preset must fail");
        };
        let text = err.to_string();
        assert!(
            text.contains("no preset `tiny`") && text.contains("small"),
            "{text}"
        );
    }
}
