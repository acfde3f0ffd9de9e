//! The `list` table: plain for scripts, rich on a terminal.

use chrono::{DateTime, Utc};
use ttm_proto::v1::TxnState;

use super::{column_width, grid, remaining};
use crate::term::{self, Human, Palette};

/// The `list` table: a header, then one row per transaction, `*` marking
/// the active one, the description cut to its first line.
#[cfg(test)]
pub fn list_table(txns: &[TxnState]) -> Vec<String> {
    list_table_styled(txns, Palette::new(false))
}

/// [`list_table`], stages coloured by `palette` (for `--color always`
/// into a pipe).
pub fn list_table_styled(txns: &[TxnState], palette: Palette) -> Vec<String> {
    if txns.is_empty() {
        return Vec::new();
    }
    let rows: Vec<[String; 5]> = txns
        .iter()
        .map(|txn| {
            [
                txn.txn_id.clone(),
                txn.stage.clone(),
                txn.iteration.to_string(),
                format!("{}{}", txn.target, lease_note(txn)),
                txn.description.lines().next().unwrap_or("").to_owned(),
            ]
        })
        .collect();
    let header = ["ID", "STAGE", "ITER", "TARGET", "DESCRIPTION"].map(str::to_owned);
    let mut widths = [0usize; 4];
    for row in rows.iter().chain(std::iter::once(&header)) {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let format_row = |mark: char, row: &[String; 5], stage: String| {
        let pad = widths[1].saturating_sub(row[1].chars().count());
        let line = format!(
            "{mark} {:<w0$}  {stage}{}  {:>w2$}  {:<w3$}  {}",
            row[0],
            " ".repeat(pad),
            row[2],
            row[3],
            row[4],
            w0 = widths[0],
            w2 = widths[2],
            w3 = widths[3],
        );
        line.trim_end().to_owned()
    };
    let mut lines = vec![format_row(' ', &header, header[1].clone())];
    for (txn, row) in txns.iter().zip(&rows) {
        let mark = if txn.active { '*' } else { ' ' };
        lines.push(format_row(mark, row, palette.stage(&row[1])));
    }
    lines
}

/// The `list` table on a terminal: `*` marks the active transaction, the
/// stage is coloured, the last change is relative ("3 min ago") and the
/// description is cut to what is left of the terminal's width.
/// ` holds @prod`, ` awaits @prod`: the leases of a row, or "". In
/// cluster mode first where it lives: ` [home b]`, with `, stale` for
/// another host's row shown from the last read while etcd is unreachable
/// and `, mirror +N` for a row whose last N lines are not in etcd yet.
pub fn lease_note(t: &TxnState) -> String {
    let mut note = cluster_note(t);
    if !t.leases_held.is_empty() {
        note.push_str(&format!(" holds {}", t.leases_held.join(",")));
    }
    if !t.leases_awaited.is_empty() {
        note.push_str(&format!(" awaits {}", t.leases_awaited.join(",")));
    }
    note
}

fn cluster_note(t: &TxnState) -> String {
    if t.home.is_empty() {
        return String::new();
    }
    let stale = if t.stale { ", stale" } else { "" };
    let lag = match t.mirror_lag {
        0 => String::new(),
        n => format!(", mirror +{n}"),
    };
    format!(" [home {}{stale}{lag}]", t.home)
}

pub fn list_rich(txns: &[TxnState], now: DateTime<Utc>, human: &Human) -> Vec<String> {
    let p = human.palette;
    let cells: Vec<[String; 5]> = txns
        .iter()
        .map(|t| {
            [
                t.txn_id.clone(),
                t.stage.clone(),
                t.iteration.to_string(),
                term::one_line(&format!("{}{}", t.target, lease_note(t))),
                term::relative(&t.last_checkpoint, now),
            ]
        })
        .collect();
    let titles = ["  ID", "STAGE", "ITER", "TARGET", "UPDATED"];
    let mut widths = Vec::new();
    for (i, title) in titles.iter().enumerate() {
        let extra = if i == 0 { 2 } else { 0 };
        widths.push(column_width(title, cells.iter().map(|c| c[i].as_str())) + extra);
    }
    let description = remaining(human.width, &widths, 12);
    let rows = txns
        .iter()
        .zip(cells)
        .map(|(t, [id, stage, iteration, target, updated])| {
            let id = if t.active {
                p.bold(&format!("* {id}"))
            } else {
                format!("  {id}")
            };
            vec![
                id,
                p.stage(&stage),
                iteration,
                target,
                updated,
                term::truncate(&term::one_line(&t.description), description),
            ]
        })
        .collect();
    grid(
        p,
        &["  ID", "STAGE", "ITER", "TARGET", "UPDATED", "DESCRIPTION"],
        rows,
        &[2],
    )
}
