//! Shared wire helpers: times and pages.

use clarion_store::Millis;
use serde::Serialize;
use utoipa::ToSchema;

/// Milliseconds since the epoch as RFC 3339 UTC with milliseconds, as in the report.
pub fn time(millis: Millis) -> String {
    clarion_webhooks::Timestamp::from_unix_millis(millis)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// A page of a list: `next_cursor` is null on the last page; pass it as `after` otherwise.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    pub data: Vec<T>,
    pub next_cursor: Option<String>,
}

/// The default and the largest page size.
pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 200;

/// Checks a `limit` parameter.
pub fn limit(requested: Option<u32>) -> Result<u32, crate::error::ApiError> {
    match requested {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(_) => Err(crate::error::ApiError::invalid(
            "limit",
            format!("limit must be between 1 and {MAX_LIMIT}"),
        )),
    }
}

/// Parses an `after` cursor (an id, as text).
pub fn cursor(after: Option<&str>) -> Result<Option<i64>, crate::error::ApiError> {
    after
        .filter(|a| !a.is_empty())
        .map(|a| {
            a.parse::<i64>().ok().filter(|id| *id > 0).ok_or_else(|| {
                crate::error::ApiError::invalid("after", "not a cursor from this API")
            })
        })
        .transpose()
}
