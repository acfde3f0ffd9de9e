//! Reading `ttmd.toml` against the table: every key must be a setting's, so
//! a misspelt key is an error rather than a setting silently left at its
//! default.

use std::collections::BTreeMap;
use std::path::Path;

use toml::Value;

use super::settings::{is_section, setting};
use crate::core::{Error, Result};

/// The file's values by setting key, not yet checked against their codecs.
pub(super) type Values = BTreeMap<&'static str, Value>;

pub(super) fn parse(text: &str, path: &Path) -> Result<Values> {
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| corrupt(path, e.to_string().trim()))?;
    let mut values = Values::new();
    for (name, value) in table {
        if let Some(s) = setting(&name) {
            values.insert(s.key, value);
            continue;
        }
        if !is_section(&name) {
            return Err(corrupt(path, &format!("unknown key `{name}`")));
        }
        let Value::Table(inner) = value else {
            return Err(corrupt(path, &format!("`{name}` must be a [{name}] table")));
        };
        for (leaf, value) in inner {
            let key = format!("{name}.{leaf}");
            let s = setting(&key)
                .ok_or_else(|| corrupt(path, &format!("unknown key `{leaf}` in [{name}]")))?;
            values.insert(s.key, value);
        }
    }
    Ok(values)
}

pub(super) fn corrupt(path: &Path, message: &str) -> Error {
    Error::Corrupt {
        path: path.to_path_buf(),
        message: format!("invalid config: {message}"),
    }
}
