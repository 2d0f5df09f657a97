//! Finds where each value of a YAML file starts, so that errors found after parsing (an unknown
//! input, a `${name}` naming no axis) can still point at a line and column.
//!
//! Paths use the form of `serde_path_to_error`: `stages.train.inputs[0]`.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

/// Value positions by path; keys of mappings are recorded too, under `path` + `#key`.
#[derive(Debug, Default)]
pub struct Locator {
    positions: HashMap<String, Position>,
}

enum Frame {
    Mapping { path: String, key: Option<String> },
    Sequence { path: String, index: usize },
}

struct Builder {
    stack: Vec<Frame>,
    positions: HashMap<String, Position>,
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

impl Builder {
    /// The path of the node starting now, or None if the node is a mapping key.
    fn place(&mut self, scalar: Option<&str>, mark: Marker) -> Option<String> {
        let position = Position {
            line: mark.line(),
            // yaml-rust2 counts columns from 0 despite its doc comment.
            column: mark.col() + 1,
        };
        match self.stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Mapping { path, key }) => match key.take() {
                None => {
                    let name = scalar.unwrap_or("?").to_string();
                    self.positions
                        .insert(format!("{}#key", join(path, &name)), position);
                    *key = Some(name);
                    None
                }
                Some(name) => Some(join(path, &name)),
            },
            Some(Frame::Sequence { path, index }) => {
                let here = format!("{path}[{index}]");
                *index += 1;
                Some(here)
            }
        }
        .inspect(|path| {
            self.positions.insert(path.clone(), position);
        })
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, event: Event, mark: Marker) {
        match event {
            Event::Scalar(text, ..) => {
                self.place(Some(&text), mark);
            }
            Event::Alias(_) => {
                self.place(None, mark);
            }
            Event::MappingStart(..) => {
                if let Some(path) = self.place(None, mark) {
                    self.stack.push(Frame::Mapping { path, key: None });
                } else {
                    // A complex mapping key: keep the structure consistent.
                    self.stack.push(Frame::Mapping {
                        path: "?".into(),
                        key: None,
                    });
                }
            }
            Event::SequenceStart(..) => {
                let path = self.place(None, mark).unwrap_or_else(|| "?".into());
                self.stack.push(Frame::Sequence { path, index: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

impl Locator {
    /// Builds the locator; a file the YAML parser rejects gives an empty one (the deserializer
    /// reports the syntax error with its own position).
    pub fn new(text: &str) -> Locator {
        let mut builder = Builder {
            stack: Vec::new(),
            positions: HashMap::new(),
        };
        let mut parser = Parser::new_from_str(text);
        if parser.load(&mut builder, false).is_err() {
            return Locator::default();
        }
        Locator {
            positions: builder.positions,
        }
    }

    /// Where the value at `path` starts. For a path the file does not have (a missing field), the
    /// key of the closest enclosing entry, e.g. the stage's name.
    pub fn value(&self, path: &str) -> Option<Position> {
        if let Some(position) = self.positions.get(path) {
            return Some(*position);
        }
        let mut path = path;
        loop {
            let cut = path.rfind(['.', '['])?;
            path = &path[..cut];
            if let Some(position) = self
                .positions
                .get(&format!("{path}#key"))
                .or_else(|| self.positions.get(path))
            {
                return Some(*position);
            }
        }
    }

    /// Where the key of the mapping entry at `path` is (for errors about the entry itself).
    pub fn key(&self, path: &str) -> Option<Position> {
        self.positions
            .get(&format!("{path}#key"))
            .copied()
            .or_else(|| self.value(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "name: x\nsweep:\n  ratio: [0.25, 0.5]\nstages:\n  train:\n    kind: cmd\n    inputs:\n      - prep\n    params: {n: 1}\n";

    #[test]
    fn values_and_keys_have_positions() {
        let locator = Locator::new(TEXT);
        assert_eq!(locator.value("name"), Some(Position { line: 1, column: 7 }));
        assert_eq!(
            locator.value("sweep.ratio[1]"),
            Some(Position {
                line: 3,
                column: 17
            })
        );
        assert_eq!(
            locator.key("stages.train"),
            Some(Position { line: 5, column: 3 })
        );
        assert_eq!(
            locator.value("stages.train.kind"),
            Some(Position {
                line: 6,
                column: 11
            })
        );
        assert_eq!(
            locator.value("stages.train.inputs[0]"),
            Some(Position { line: 8, column: 9 })
        );
        assert_eq!(
            locator.value("stages.train.params.n"),
            Some(Position {
                line: 9,
                column: 17
            })
        );
    }

    #[test]
    fn unknown_paths_fall_back_to_the_parent() {
        let locator = Locator::new(TEXT);
        assert_eq!(
            locator.value("stages.train.params.missing"),
            locator.key("stages.train.params")
        );
        assert_eq!(
            locator.value("stages.train.run"),
            Some(Position { line: 5, column: 3 })
        );
    }
}
