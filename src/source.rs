//! Positions in a source file (inventory, playbook): byte offsets to line and column, and an
//! error that names `PATH:LINE:COL`.

use std::path::{Path, PathBuf};

/// Maps byte offsets of a text to lines and columns, both counted from 1.
#[derive(Debug, Clone)]
pub struct Positions<'a> {
    text: &'a str,
    line_starts: Vec<usize>,
}

impl<'a> Positions<'a> {
    pub fn new(text: &'a str) -> Positions<'a> {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Positions { text, line_starts }
    }

    /// The line and column (in characters) of byte offset `at`.
    pub fn line_col(&self, at: usize) -> (usize, usize) {
        let at = at.min(self.text.len());
        let index = self.line_starts.partition_point(|&start| start <= at);
        let line_start = self.line_starts[index.saturating_sub(1)];
        let col = self
            .text
            .get(line_start..at)
            .map_or(at - line_start, |before| before.chars().count());
        (index, col + 1)
    }
}

/// Formats `PATH:LINE:COL: message`, leaving out what is unknown (0).
pub fn located(path: &Path, line: usize, col: usize, message: &str) -> String {
    match (line, col) {
        (0, _) => format!("{}: {message}", path.display()),
        (line, 0) => format!("{}:{line}: {message}", path.display()),
        (line, col) => format!("{}:{line}:{col}: {message}", path.display()),
    }
}

/// An error at a position of a file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", located(path, *line, *col, message))]
pub struct SourceError {
    pub path: PathBuf,
    /// From 1; 0 when unknown.
    pub line: usize,
    /// From 1; 0 when unknown.
    pub col: usize,
    pub message: String,
}

impl SourceError {
    /// An error at byte offset `at` of `text`.
    pub fn at(path: &Path, text: &str, at: usize, message: impl Into<String>) -> SourceError {
        let (line, col) = Positions::new(text).line_col(at);
        SourceError {
            path: path.to_path_buf(),
            line,
            col,
            message: message.into(),
        }
    }

    /// An error from the TOML parser (syntax, unknown key, wrong type), with its position.
    pub fn toml(path: &Path, text: &str, err: &toml::de::Error) -> SourceError {
        let message = err.message().trim().to_string();
        match err.span() {
            Some(span) => SourceError::at(path, text, span.start, message),
            None => SourceError {
                path: path.to_path_buf(),
                line: 0,
                col: 0,
                message,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_map_to_lines_and_columns() {
        let p = Positions::new("ab\ncdé\nf");
        assert_eq!(p.line_col(0), (1, 1));
        assert_eq!(p.line_col(3), (2, 1));
        assert_eq!(p.line_col(7), (2, 4));
        assert_eq!(p.line_col(8), (3, 1));
        assert_eq!(p.line_col(1000), (3, 2));
    }

    #[test]
    fn errors_name_path_line_and_column() {
        let err = SourceError::at(Path::new("p.toml"), "a\nbc", 3, "bad");
        assert_eq!(err.to_string(), "p.toml:2:2: bad");
        assert_eq!(located(Path::new("p"), 4, 0, "m"), "p:4: m");
        assert_eq!(located(Path::new("p"), 0, 0, "m"), "p: m");
    }
}
