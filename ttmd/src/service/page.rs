//! `List` and `ListContext` in pages (AIP-158): a reply holds at most `page_size` rows and
//! ends before it would pass [`PAGE_BYTES`], so no reply nears the 4 MiB
//! that standard gRPC clients accept by default, whatever the client asks.

use crate::core::{Error, Result};
use crate::store::module::Listed;

/// Rows in a page when the client asks for none in particular.
pub const DEFAULT_PAGE_SIZE: usize = 500;
/// Rows in a page at most, whatever the client asks.
pub const MAX_PAGE_SIZE: usize = 5000;
/// Encoded bytes of the rows of one reply at most (one row always goes, and
/// a state is bounded by `limits.state`): well under gRPC's common 4 MiB.
pub const PAGE_BYTES: usize = 1024 * 1024;

/// Where a page starts: after the row with this (created, id), the order
/// `Module::list` sorts by (`Module::list_after` takes the key).
#[derive(Debug, PartialEq, Eq)]
pub struct After {
    created: String,
    id: String,
}

impl After {
    /// The (created, id) key rows must sort after.
    pub fn key(&self) -> (&str, &str) {
        (&self.created, &self.id)
    }
}

/// The token naming the rows after `row`; opaque to clients.
pub fn token_after(row: &Listed) -> String {
    format!("{} {}", row.summary.created(), row.id)
}

/// Reads a `page_token`; empty means the first page.
pub fn parse_token(token: &str) -> Result<Option<After>> {
    if token.is_empty() {
        return Ok(None);
    }
    match token.split_once(' ') {
        Some((created, id)) if !id.is_empty() && !id.contains(' ') => Ok(Some(After {
            created: created.to_string(),
            id: id.to_string(),
        })),
        _ => Err(Error::invalid(format!(
            "page_token {token:?} is not one this daemon gives out; pass the \
             next_page_token of the previous List reply, or none for the first page"
        ))),
    }
}

/// The page size a request gets: `default` for 0, at most
/// [`MAX_PAGE_SIZE`].
pub fn page_size(asked: u32, default: usize) -> usize {
    match asked as usize {
        0 => default,
        n => n.min(MAX_PAGE_SIZE),
    }
}

/// Collects rows built by `row` from `items[start..]` until the page is
/// full by count or bytes; returns them and, if items are left, the token
/// (`token` of the last item sent) that asks for the rest.
pub fn fill<I, T: prost::Message>(
    items: &[I],
    start: usize,
    size: usize,
    token: impl Fn(&I) -> String,
    mut row: impl FnMut(&I) -> Result<T>,
) -> Result<(Vec<T>, Option<String>)> {
    let mut rows = Vec::new();
    let mut bytes = 0usize;
    for i in start..items.len() {
        let next = Some(token(&items[i.saturating_sub(1)]));
        if rows.len() >= size {
            return Ok((rows, next));
        }
        let msg = row(&items[i])?;
        // Field tag + length prefix: a few bytes on top of each row.
        let len = msg.encoded_len() + 8;
        if !rows.is_empty() && bytes + len > PAGE_BYTES {
            return Ok((rows, next));
        }
        bytes += len;
        rows.push(msg);
    }
    Ok((rows, None))
}

/// Rows in a `ListContext` page when the client asks for none in
/// particular.
pub const DEFAULT_CTX_PAGE_SIZE: usize = 1000;

/// The ctx files a `ListContext` page starts at: those after the file the
/// token names, in the listing's order (number, then name), so files added
/// meanwhile (numbered higher) come in later pages.
pub fn ctx_files_after(order: &[(String, u32)], token: &str) -> Result<usize> {
    if token.is_empty() {
        return Ok(0);
    }
    if !crate::core::ctx::is_ctx_name(token) {
        return Err(Error::invalid(format!(
            "page_token {token:?} is not one this daemon gives out; pass the \
             next_page_token of the previous ListContext reply, or none for the first page"
        )));
    }
    let key = |n: &str| {
        (
            crate::core::ctx::number_of(n).unwrap_or(u64::MAX),
            n.to_owned(),
        )
    };
    let after = key(token);
    Ok(order.partition_point(|(name, _)| key(name) <= after))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_checked() {
        assert_eq!(parse_token("").unwrap(), None);
        assert!(parse_token("nonsense").is_err());
        assert!(parse_token("a b c").is_err());
        let after = parse_token("2026-01-01T00:00:00Z x-20260101T000000").unwrap();
        assert!(after.is_some());
    }

    #[test]
    fn sizes_are_capped() {
        assert_eq!(page_size(0, DEFAULT_PAGE_SIZE), DEFAULT_PAGE_SIZE);
        assert_eq!(page_size(7, DEFAULT_PAGE_SIZE), 7);
        assert_eq!(page_size(u32::MAX, DEFAULT_PAGE_SIZE), MAX_PAGE_SIZE);
    }
}
