//! Errors in a workflow file: one message, the file and `line:col` it points at, an
//! optional help line. Rendered as plain text (pinned by tests) or through miette.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

/// A workflow file and its text, kept so errors can quote the offending line.
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub path: PathBuf,
    pub text: Arc<str>,
}

/// Where in a source file an error points (1-based line and column).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub line: usize,
    pub col: usize,
}

/// An invalid workflow: what is wrong, where, and what to do about it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct SpecError {
    /// Lowercase, names things in backticks.
    pub message: String,
    /// The file the error is in (the workflow, or an included sweep file).
    pub file: Option<SourceFile>,
    pub location: Option<Location>,
    pub help: Option<String>,
}

impl SpecError {
    pub fn new(message: impl Into<String>) -> Self {
        SpecError {
            message: message.into(),
            file: None,
            location: None,
            help: None,
        }
    }

    pub fn in_file(mut self, file: &SourceFile, location: Option<Location>) -> Self {
        self.file = Some(file.clone());
        self.location = location;
        self
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// `error: ...` / ` --> file:line:col` / the source line with a caret / `help: ...`.
    pub fn render(&self) -> String {
        let mut out = format!("error: {}\n", self.message);
        if let Some(file) = &self.file {
            match &self.location {
                Some(loc) => {
                    out.push_str(&format!(
                        " --> {}:{}:{}\n",
                        file.path.display(),
                        loc.line,
                        loc.col
                    ));
                    if let Some(line) = file.text.lines().nth(loc.line.saturating_sub(1)) {
                        let num = loc.line.to_string();
                        let pad = " ".repeat(num.len());
                        out.push_str(&format!(
                            "{pad} |\n{num} | {line}\n{pad} | {}^\n",
                            " ".repeat(loc.col.saturating_sub(1))
                        ));
                    }
                }
                None => out.push_str(&format!(" --> {}\n", file.path.display())),
            }
        }
        if let Some(help) = &self.help {
            out.push_str(&format!("help: {help}\n"));
        }
        out
    }
}

impl miette::Diagnostic for SpecError {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new("cocoflow::invalid_workflow"))
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.help
            .as_ref()
            .map(|h| Box::new(h.clone()) as Box<dyn fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        self.file
            .as_ref()
            .map(|f| &f.text as &dyn miette::SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = miette::LabeledSpan> + '_>> {
        let (file, loc) = (self.file.as_ref()?, self.location.as_ref()?);
        let offset = byte_offset(&file.text, loc)?;
        Some(Box::new(std::iter::once(miette::LabeledSpan::new(
            Some("here".into()),
            offset,
            1,
        ))))
    }
}

pub(crate) fn byte_offset(text: &str, loc: &Location) -> Option<usize> {
    let mut offset = 0;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        if i + 1 == loc.line {
            let col_bytes: usize = line
                .chars()
                .take(loc.col.saturating_sub(1))
                .map(char::len_utf8)
                .sum();
            return Some(offset + col_bytes);
        }
        offset += line.len();
    }
    None
}

/// Names close to `wanted` among `known`, for "did you mean" help.
pub fn suggest<'a>(wanted: &str, known: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let mut best: Option<(usize, &str)> = None;
    for k in known {
        let d = edit_distance(wanted, k);
        if d <= 2.max(wanted.len() / 3) && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, k));
        }
    }
    best.map(|(_, k)| format!("did you mean `{k}`?"))
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}
