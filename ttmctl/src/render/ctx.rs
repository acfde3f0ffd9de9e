//! The `ctx` listings.

use serde_json::Value;
use ttm_proto::v1::ContextFile;

use super::grid;
use crate::term::{self, Human};

/// `ctx list`: name and size in bytes, aligned.
pub fn ctx_table(files: &[ContextFile]) -> Vec<String> {
    let name_width = files
        .iter()
        .map(|f| f.name.chars().count())
        .max()
        .unwrap_or(0);
    let bytes_width = files
        .iter()
        .map(|f| f.bytes.to_string().len())
        .max()
        .unwrap_or(0);
    files
        .iter()
        .map(|f| format!("{:<name_width$}  {:>bytes_width$}", f.name, f.bytes))
        .collect()
}

/// `ctx list` on a terminal: name, size, bytes and the evidence variable.
pub fn ctx_rich(files: &[ContextFile], human: &Human) -> Vec<String> {
    let rows = files
        .iter()
        .map(|f| {
            vec![
                term::clean(&f.name),
                term::bytes(f.bytes),
                f.bytes.to_string(),
                if f.evidence_index >= 1 {
                    format!("$e{}", f.evidence_index)
                } else {
                    String::new()
                },
            ]
        })
        .collect();
    grid(
        human.palette,
        &["NAME", "SIZE", "BYTES", "VAR"],
        rows,
        &[1, 2],
    )
}

pub fn ctx_file_json(file: &ContextFile) -> Value {
    serde_json::json!({
        "name": file.name,
        "number": file.number,
        "bytes": file.bytes,
        "path": file.path,
        "evidence_index": file.evidence_index,
    })
}
