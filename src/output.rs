//! Rendering: tables for people, JSON for scripts. The work never prints; it returns rows, and
//! this module decides how they look.

use std::io::{IsTerminal, Write};

use serde::Serialize;

use crate::redact;
use tabled::settings::Style;
use tabled::{Table, Tabled};

/// How a command prints its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum OutputFormat {
    /// A table for people (borderless when stdout is not a terminal).
    #[default]
    Table,
    /// JSON for scripts: the same rows, as an array of objects.
    Json,
}

/// Renders rows as a table: rounded borders on a terminal, plain columns otherwise.
pub fn table<T: Tabled>(rows: &[T], terminal: bool) -> String {
    let mut table = Table::new(rows);
    if terminal {
        table.with(Style::rounded());
    } else {
        table.with(Style::blank());
    }
    table.to_string()
}

/// Prints rows to stdout in the chosen format; `summary` follows a table (not JSON).
pub fn print_rows<T: Tabled + Serialize>(
    rows: &[T],
    format: OutputFormat,
    summary: Option<&str>,
) -> std::io::Result<()> {
    let stdout = std::io::stdout();
    let terminal = stdout.is_terminal();
    let mut out = stdout.lock();
    match format {
        OutputFormat::Table => {
            writeln!(out, "{}", redact::text(&table(rows, terminal)))?;
            if let Some(summary) = summary {
                writeln!(out, "{}", redact::text(summary))?;
            }
        }
        OutputFormat::Json => {
            let mut value = serde_json::to_value(rows).map_err(std::io::Error::other)?;
            redact::value(&mut value);
            serde_json::to_writer_pretty(&mut out, &value).map_err(std::io::Error::other)?;
            writeln!(out)?;
        }
    }
    out.flush()
}

/// True when stdout is a terminal.
pub fn stdout_is_terminal() -> bool {
    std::io::stdout().is_terminal()
}

/// Prints any serialisable value as pretty JSON.
pub fn print_json<T: Serialize>(value: &T) -> std::io::Result<()> {
    let mut value = serde_json::to_value(value).map_err(std::io::Error::other)?;
    redact::value(&mut value);
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, &value).map_err(std::io::Error::other)?;
    writeln!(out)?;
    out.flush()
}

/// Writes bytes as they are (a completion script, a manual page).
pub fn write_stdout(bytes: &[u8]) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)?;
    out.flush()
}

/// Prints text and a newline.
pub fn print_text(text: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", redact::text(text))?;
    out.flush()
}

/// A line for the operator on stderr (progress, notes, errors): never the result, which
/// goes to stdout. Secrets are masked.
pub fn note(text: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{}", redact::text(text));
}

/// Formats an optional value for a table cell: `-` when absent.
pub fn cell<T: std::fmt::Display>(value: &Option<T>) -> String {
    match value {
        Some(v) => v.to_string(),
        None => "-".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Tabled, Serialize)]
    struct Row {
        host: &'static str,
        half: &'static str,
    }

    #[test]
    fn plain_table_has_headers_and_rows_without_borders() {
        let text = table(
            &[Row {
                host: "px1",
                half: "a",
            }],
            false,
        );
        assert!(text.contains("host"), "{text}");
        assert!(text.contains("px1"), "{text}");
        assert!(!text.contains('│'), "{text}");
    }

    #[test]
    fn terminal_table_has_borders() {
        let text = table(
            &[Row {
                host: "px1",
                half: "a",
            }],
            true,
        );
        assert!(text.contains('│'), "{text}");
    }

    #[test]
    fn absent_cell_is_a_dash() {
        assert_eq!(cell::<u32>(&None), "-");
        assert_eq!(cell(&Some(3)), "3");
    }
}
