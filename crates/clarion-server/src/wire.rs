//! Shared wire helpers: times, pages and public ids.
//!
//! Every id the API shows or accepts is the organisation's public id
//! ([`clarion_store::public_id`]): row ids are global counters and would tell one tenant how
//! much the others do. Routes decode on the way in ([`internal`], [`cursor`]) and encode on the
//! way out ([`PublicIds::encode`], [`next_cursor`]).

use clarion_store::{IdKind, Millis, PublicIds, TypedId};
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

/// The internal id behind a public id of `kind`, or 404 naming `what`: a number that is not
/// one of this organisation's ids names nothing, like any unknown id.
pub fn internal<Id: TypedId>(
    ids: &PublicIds,
    kind: IdKind,
    public: i64,
    what: &str,
) -> Result<Id, crate::error::ApiError> {
    ids.decode(kind, public)
        .map(Id::from_raw)
        .ok_or_else(|| crate::error::ApiError::not_found(what))
}

/// Parses an `after` cursor: the public id (of `kind`) of the last item of the previous page,
/// as text. Answers the internal id to continue after.
pub fn cursor<Id: TypedId>(
    ids: &PublicIds,
    kind: IdKind,
    after: Option<&str>,
) -> Result<Option<Id>, crate::error::ApiError> {
    after
        .filter(|a| !a.is_empty())
        .map(|a| {
            a.parse::<i64>()
                .ok()
                .and_then(|public| ids.decode(kind, public))
                .map(Id::from_raw)
                .ok_or_else(|| {
                    crate::error::ApiError::invalid("after", "not a cursor from this API")
                })
        })
        .transpose()
}

/// The `next_cursor` of a full page whose last item has internal id `last`.
pub fn next_cursor(ids: &PublicIds, kind: IdKind, last: impl Into<i64>) -> String {
    ids.encode(kind, last).to_string()
}
