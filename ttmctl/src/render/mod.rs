//! Human-readable renderings (the non-`--json` output). Pure functions from
//! messages to lines, so the formats are unit-tested without a daemon.
//!
//! Two families: the plain formats (`list_table`, `ctx_table`,
//! `status_summary`, `event_line`, `watch_line`), printed when stdout is not
//! a terminal and stable for scripts; and the terminal ones (`*_rich`):
//! tables with relative times, cut to the terminal's width. Both take a
//! [`Palette`], which adds colour or nothing.

mod ctx;
mod events;
mod list;
mod status;
#[cfg(test)]
mod tests;

use comfy_table::{CellAlignment, ContentArrangement, Table};

use crate::term::{self, Palette};

pub use ctx::{ctx_file_json, ctx_rich, ctx_table};
pub use events::{change_kind, event_fields, event_line_styled, watch_line_styled};
#[cfg(test)]
pub use events::{event_line, watch_line};
#[cfg(test)]
pub use list::list_table;
pub use list::{lease_note, list_rich, list_table_styled};
pub use status::{status_rich, status_summary};

/// A borderless, aligned table for the terminal: `header` in bold, columns
/// two spaces apart, the columns in `right` aligned right. Cells may hold
/// colour codes (they are not counted as width).
fn grid(palette: Palette, header: &[&str], rows: Vec<Vec<String>>, right: &[usize]) -> Vec<String> {
    let mut table = Table::new();
    table
        .load_style(comfy_table::presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .force_no_tty()
        .set_header(
            header
                .iter()
                .map(|title| palette.bold(title))
                .collect::<Vec<_>>(),
        );
    for row in rows {
        table.add_row(row);
    }
    let last = header.len().saturating_sub(1);
    for (index, column) in table.column_iter_mut().enumerate() {
        column.set_padding((0, if index == last { 0 } else { 2 }));
        if right.contains(&index) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    table
        .lines()
        .map(|line| line.trim_end().to_owned())
        .collect()
}

/// What is left of `width` for a last column after the others (each two
/// spaces apart), never less than `min`.
fn remaining(width: usize, others: &[usize], min: usize) -> usize {
    let used: usize = others.iter().map(|w| w + 2).sum();
    width.saturating_sub(used).max(min)
}

fn column_width<'a>(title: &str, cells: impl Iterator<Item = &'a str>) -> usize {
    cells
        .map(term::columns)
        .chain([term::columns(title)])
        .max()
        .unwrap_or(0)
}
