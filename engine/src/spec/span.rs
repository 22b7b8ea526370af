//! Source positions of YAML nodes by key path (`tasks.train.needs[0]`), computed on demand
//! when an error needs one. serde_yaml gives typed values but no spans; yaml-rust2's event
//! stream gives markers, so errors found after deserialisation can still point at the file.

use super::error::{Location, SourceFile};
use std::collections::HashMap;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// Path → position of the key (for mapping entries) or of the item (for sequence items).
#[derive(Debug, Default)]
pub struct SpanIndex {
    positions: HashMap<String, Location>,
    /// Position of the value node of a key path, when it differs from the key's.
    values: HashMap<String, Location>,
}

enum Frame {
    Map {
        path: String,
        pending_key: Option<String>,
    },
    Seq {
        path: String,
        next: usize,
    },
}

struct Builder {
    stack: Vec<Frame>,
    index: SpanIndex,
}

fn loc(mark: &Marker) -> Location {
    Location {
        line: mark.line(),
        col: mark.col() + 1,
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

impl Builder {
    /// The path of the node now starting, and records its position.
    fn node_path(&mut self, mark: &Marker) -> Option<String> {
        match self.stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Seq { path, next }) => {
                let p = format!("{path}[{next}]");
                *next += 1;
                self.index.positions.insert(p.clone(), loc(mark));
                Some(p)
            }
            Some(Frame::Map {
                pending_key: Some(_),
                ..
            }) => {
                let Some(Frame::Map { path, pending_key }) = self.stack.last_mut() else {
                    unreachable!()
                };
                let p = join(path, &pending_key.take().unwrap_or_default());
                self.index.values.insert(p.clone(), loc(mark));
                Some(p)
            }
            Some(Frame::Map { .. }) => None, // this node is a key
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::Scalar(value, ..) => {
                if let Some(Frame::Map {
                    path,
                    pending_key: pending @ None,
                }) = self.stack.last_mut()
                {
                    let p = join(path, &value);
                    self.index.positions.insert(p, loc(&mark));
                    *pending = Some(value);
                } else {
                    self.node_path(&mark);
                }
            }
            Event::MappingStart(..) => {
                let path = self.node_path(&mark).unwrap_or_default();
                self.stack.push(Frame::Map {
                    path,
                    pending_key: None,
                });
            }
            Event::SequenceStart(..) => {
                let path = self.node_path(&mark).unwrap_or_default();
                self.stack.push(Frame::Seq { path, next: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            Event::Alias(..) => {
                self.node_path(&mark);
            }
            _ => {}
        }
    }
}

impl SpanIndex {
    pub fn build(text: &str) -> SpanIndex {
        let mut builder = Builder {
            stack: Vec::new(),
            index: SpanIndex::default(),
        };
        let mut parser = Parser::new_from_str(text);
        // A syntax error stops the index where it is; serde_yaml reports the error itself.
        let _ = parser.load(&mut builder, false);
        builder.index
    }

    /// Position of the key at `path`, else of the closest enclosing key.
    pub fn locate(&self, path: &str) -> Option<Location> {
        let mut p = path.to_string();
        loop {
            if let Some(l) = self.positions.get(&p) {
                return Some(l.clone());
            }
            let cut = p.rfind(['.', '['])?;
            p.truncate(cut);
        }
    }

    /// Position of the value at `path` (falls back to the key).
    pub fn locate_value(&self, path: &str) -> Option<Location> {
        self.values.get(path).cloned().or_else(|| self.locate(path))
    }
}

/// Looks up a path's position in a source file (builds the index each call: errors only).
pub fn locate(file: &SourceFile, path: &str) -> Option<Location> {
    SpanIndex::build(&file.text).locate(path)
}

pub fn locate_value(file: &SourceFile, path: &str) -> Option<Location> {
    SpanIndex::build(&file.text).locate_value(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_keys_and_items() {
        let text = "name: x\ntasks:\n  train:\n    kind: shell\n    needs: [a, b]\n    params:\n      lr: 3\n";
        let idx = SpanIndex::build(text);
        assert_eq!(
            idx.locate("tasks.train"),
            Some(Location { line: 3, col: 3 })
        );
        assert_eq!(
            idx.locate("tasks.train.kind"),
            Some(Location { line: 4, col: 5 })
        );
        assert_eq!(
            idx.locate("tasks.train.needs[1]"),
            Some(Location { line: 5, col: 16 })
        );
        assert_eq!(
            idx.locate("tasks.train.params.lr"),
            Some(Location { line: 7, col: 7 })
        );
        assert_eq!(
            idx.locate_value("tasks.train.params.lr"),
            Some(Location { line: 7, col: 11 })
        );
        // Unknown sub-paths fall back to the closest known key.
        assert_eq!(
            idx.locate("tasks.train.params.lr.x"),
            Some(Location { line: 7, col: 7 })
        );
    }
}
