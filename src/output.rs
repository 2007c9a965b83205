//! Rendering: tables for people, JSON for scripts. The work never prints; it returns rows, and
//! this module decides how they look.

use std::io::{IsTerminal, Write};

use serde::Serialize;
use unicode_width::UnicodeWidthStr;

use crate::{redact, terminal};
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
    terminal::clear();
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

/// Writes a table as its rows are made, never holding it: `fill(i, cells)` puts the text of
/// row `i`'s cells into `cells` (empty strings, one per header), and is called twice per row:
/// a first pass over the rows measures the columns, a second writes them. The text is
/// [`table`]'s (tabled's: rounded borders on a terminal, blank otherwise, a cell's lines
/// split at `\n`), line by line, each with its secrets masked.
pub fn write_table(
    out: &mut impl Write,
    headers: &[&str],
    rows: usize,
    mut fill: impl FnMut(usize, &mut [String]),
    terminal: bool,
) -> std::io::Result<()> {
    let mut cells = vec![String::new(); headers.len()];
    let mut row = |i: usize, cells: &mut [String]| {
        cells.iter_mut().for_each(String::clear);
        fill(i, cells);
    };
    let mut widths: Vec<usize> = headers.iter().map(|h| text_width(h)).collect();
    for i in 0..rows {
        row(i, &mut cells);
        for (width, cell) in widths.iter_mut().zip(&cells) {
            *width = (*width).max(text_width(cell));
        }
    }
    let rule = |left: &str, cross: &str, right: &str| {
        let parts: Vec<String> = widths.iter().map(|w| "─".repeat(w + 2)).collect();
        format!("{left}{}{right}", parts.join(cross))
    };
    let mut line = String::new();
    let mut write_row = |out: &mut dyn Write, cells: &[String]| -> std::io::Result<()> {
        let height = cells
            .iter()
            .map(|c| c.split('\n').count())
            .max()
            .unwrap_or(1);
        let mut lines: Vec<std::str::Split<'_, char>> =
            cells.iter().map(|c| c.split('\n')).collect();
        for _ in 0..height {
            line.clear();
            if terminal {
                line.push('│');
            }
            for (k, (width, parts)) in widths.iter().zip(lines.iter_mut()).enumerate() {
                if k > 0 {
                    line.push(if terminal { '│' } else { ' ' });
                }
                let part = parts.next().unwrap_or("");
                line.push(' ');
                line.push_str(part);
                line.extend(std::iter::repeat_n(' ', width - text_width(part) + 1));
            }
            if terminal {
                line.push('│');
            }
            writeln!(out, "{}", redact::text(&line))?;
        }
        Ok(())
    };
    if terminal {
        writeln!(out, "{}", rule("╭", "┬", "╮"))?;
    }
    let header: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    write_row(out, &header)?;
    if terminal {
        // Without rows, tabled ends the table with this rule; so does this.
        writeln!(out, "{}", rule("├", "┼", "┤"))?;
    }
    for i in 0..rows {
        row(i, &mut cells);
        write_row(out, &cells)?;
    }
    if terminal && rows > 0 {
        writeln!(out, "{}", rule("╰", "┴", "╯"))?;
    }
    Ok(())
}

/// The width of a cell's text on a terminal: its widest line.
fn text_width(text: &str) -> usize {
    text.split('\n')
        .map(UnicodeWidthStr::width)
        .max()
        .unwrap_or(0)
}

/// A value that serialises with every registered secret masked (see [`redact::value`]):
/// for JSON written as it is made, one part at a time, each part masked on its own.
pub struct Masked<T>(pub T);

impl<T: Serialize> Serialize for Masked<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut value = serde_json::to_value(&self.0).map_err(serde::ser::Error::custom)?;
        redact::value(&mut value);
        value.serialize(serializer)
    }
}

/// Writes a value as pretty JSON and a newline, as it serialises (nothing but the part being
/// serialised is held): the value masks its secrets itself, part by part ([`Masked`]).
pub fn write_json<T: Serialize>(out: &mut impl Write, value: &T) -> std::io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, value).map_err(std::io::Error::other)?;
    writeln!(out)
}

/// True when stdout is a terminal.
pub fn stdout_is_terminal() -> bool {
    std::io::stdout().is_terminal()
}

/// Prints any serialisable value as pretty JSON.
pub fn print_json<T: Serialize>(value: &T) -> std::io::Result<()> {
    terminal::clear();
    let mut value = serde_json::to_value(value).map_err(std::io::Error::other)?;
    redact::value(&mut value);
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, &value).map_err(std::io::Error::other)?;
    writeln!(out)?;
    out.flush()
}

/// Writes bytes as they are (a completion script, a manual page).
pub fn write_stdout(bytes: &[u8]) -> std::io::Result<()> {
    terminal::clear();
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)?;
    out.flush()
}

/// Prints text and a newline.
pub fn print_text(text: &str) -> std::io::Result<()> {
    terminal::clear();
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", redact::text(text))?;
    out.flush()
}

/// A line for the operator on stderr (progress, notes): never the result, which goes to
/// stdout; above the live display when one is drawn; not with `--quiet`. Secrets are masked.
pub fn note(text: &str) {
    terminal::note(&redact::text(text));
}

/// An error on stderr, whatever the mode (`--quiet` too). Secrets are masked.
pub fn error(text: &str) {
    terminal::error(&redact::text(text));
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

    /// Rows of every shape: wide and narrow cells, unicode, a cell of two lines, an empty one.
    fn rows() -> Vec<[String; 3]> {
        [
            ["q_roll-lab.subscribe.pump.rl-px1_x_1", "px1 (half a)", "0"],
            ["q.é ünïcødé ☃ 雪", "", "12345"],
            ["q.two\nlines", "shared", "7"],
            ["x", "foreign", ""],
        ]
        .iter()
        .map(|r| r.map(str::to_string))
        .collect()
    }

    #[derive(Tabled)]
    struct Three {
        queue: String,
        owner: String,
        messages: String,
    }

    #[test]
    fn a_streamed_table_is_the_text_of_tabled() {
        for n in [0, 1, 4] {
            let rows = &rows()[..n];
            let whole: Vec<Three> = rows
                .iter()
                .map(|[a, b, c]| Three {
                    queue: a.clone(),
                    owner: b.clone(),
                    messages: c.clone(),
                })
                .collect();
            for terminal in [false, true] {
                let mut out = Vec::new();
                write_table(
                    &mut out,
                    &["queue", "owner", "messages"],
                    rows.len(),
                    |i, cells| {
                        for (cell, text) in cells.iter_mut().zip(&rows[i]) {
                            cell.push_str(text);
                        }
                    },
                    terminal,
                )
                .unwrap();
                let streamed = String::from_utf8(out).unwrap();
                assert_eq!(
                    streamed,
                    format!("{}\n", table(&whole, terminal)),
                    "{n} rows, terminal {terminal}"
                );
            }
        }
    }

    #[test]
    fn json_parts_are_masked_one_by_one() {
        crate::redact::register("s3cret-output-test");
        let value = serde_json::json!({"a": ["x s3cret-output-test y"], "b": 1});
        let mut out = Vec::new();
        write_json(&mut out, &Masked(&value)).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains("s3cret"), "{text}");
        assert!(text.contains("x *** y"), "{text}");
        assert!(text.ends_with("}\n"), "{text}");
    }

    #[test]
    fn absent_cell_is_a_dash() {
        assert_eq!(cell::<u32>(&None), "-");
        assert_eq!(cell(&Some(3)), "3");
    }
}
