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

/// The most a page's items may take as JSON. Once the items added so far reach it, the page
/// ends there (with a `next_cursor`, as when it is full by rows), so a page is at most this
/// plus one item (an item is bounded by the input limits) whatever the `limit`: a list of
/// large rows cannot build a response of hundreds of megabytes.
pub const MAX_PAGE_BYTES: usize = 1024 * 1024;

/// A page of `rows` (each item with the cursor that continues after it), fetched with
/// `limit`: ends early once [`MAX_PAGE_BYTES`] are reached; `next_cursor` is set when the page
/// was cut by bytes or is full by rows. Always has at least one item when there is one.
pub fn bounded_page<T: Serialize>(rows: Vec<(T, String)>, limit: u32) -> Page<T> {
    let full_by_rows = rows.len() >= limit as usize;
    let mut data = Vec::with_capacity(rows.len());
    let mut bytes = 0usize;
    let mut last_cursor = None;
    let mut cut_by_bytes = false;
    for (item, cursor) in rows {
        if bytes >= MAX_PAGE_BYTES {
            cut_by_bytes = true;
            break;
        }
        // Measured by writing it out once more: a few microseconds per item, against a
        // response that could otherwise be unbounded.
        let mut counter = ByteCounter(0);
        bytes = bytes.saturating_add(
            serde_json::to_writer(&mut counter, &item).map_or(usize::MAX, |()| counter.0),
        );
        data.push(item);
        last_cursor = Some(cursor);
    }
    Page {
        data,
        next_cursor: if cut_by_bytes || full_by_rows {
            last_cursor
        } else {
            None
        },
    }
}

/// Rows fetched at a time by [`bounded_page_in_chunks`].
const FETCH_CHUNK: u32 = 25;

/// Like [`bounded_page`], for lists whose rows may each be large (assistants, reports): the
/// rows are fetched [`FETCH_CHUNK`] at a time and fetching stops once the page is full by
/// rows or by bytes, so a request never holds `limit` large rows at once. `fetch(after, n)`
/// answers up to `n` rows after `after`; `item` turns a row into the page's item, the cursor
/// that continues after it, and the row's id to fetch after.
pub async fn bounded_page_in_chunks<T, Row, Id, F, Fut>(
    limit: u32,
    mut after: Option<Id>,
    mut fetch: F,
    mut item: impl FnMut(Row) -> Result<(T, String, Id), crate::error::ApiError>,
) -> Result<Page<T>, crate::error::ApiError>
where
    T: Serialize,
    Id: Copy,
    F: FnMut(Option<Id>, u32) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<Row>, crate::error::ApiError>>,
{
    let limit_rows = limit as usize;
    let mut data = Vec::new();
    let mut bytes = 0usize;
    let mut last_cursor = None;
    loop {
        let want = u32::try_from(limit_rows - data.len())
            .unwrap_or(FETCH_CHUNK)
            .min(FETCH_CHUNK);
        let rows = fetch(after, want).await?;
        let got = rows.len();
        for row in rows {
            if bytes >= MAX_PAGE_BYTES {
                // Cut by bytes with rows left over: the next page starts at them.
                return Ok(Page {
                    data,
                    next_cursor: last_cursor,
                });
            }
            let (value, cursor, id) = item(row)?;
            let mut counter = ByteCounter(0);
            bytes = bytes.saturating_add(
                serde_json::to_writer(&mut counter, &value).map_or(usize::MAX, |()| counter.0),
            );
            data.push(value);
            last_cursor = Some(cursor);
            after = Some(id);
        }
        if got < want as usize {
            return Ok(Page {
                data,
                next_cursor: None,
            });
        }
        if data.len() >= limit_rows || bytes >= MAX_PAGE_BYTES {
            return Ok(Page {
                data,
                next_cursor: last_cursor,
            });
        }
    }
}

/// Counts the bytes written to it, keeping none.
struct ByteCounter(usize);

impl std::io::Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 = self.0.saturating_add(buf.len());
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
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
    raw_cursor(ids, kind, after).map(|raw| raw.map(Id::from_raw))
}

/// [`cursor`] for ids without a typed id of their own (the access log's): the internal row
/// id after which to continue.
pub fn raw_cursor(
    ids: &PublicIds,
    kind: IdKind,
    after: Option<&str>,
) -> Result<Option<i64>, crate::error::ApiError> {
    after
        .filter(|a| !a.is_empty())
        .map(|a| {
            a.parse::<i64>()
                .ok()
                .and_then(|public| ids.decode(kind, public))
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// Rows 1..=count, each `size` bytes of JSON string, fetched through
    /// [`bounded_page_in_chunks`] page after page: every row once, in order, each page under
    /// the byte bound plus one row and at most `limit` rows.
    async fn walk(count: u32, size: usize, limit: u32) -> Vec<usize> {
        let rows: Vec<(u32, String)> = (1..=count).map(|i| (i, "x".repeat(size))).collect();
        let mut after: Option<u32> = None;
        let mut seen = Vec::new();
        let mut page_sizes = Vec::new();
        loop {
            let page = bounded_page_in_chunks(
                limit,
                after,
                |after, n| {
                    let chunk: Vec<(u32, String)> = rows
                        .iter()
                        .filter(|(id, _)| after.is_none_or(|a| *id > a))
                        .take(n as usize)
                        .cloned()
                        .collect();
                    async move { Ok(chunk) }
                },
                |(id, text)| Ok((text, id.to_string(), id)),
            )
            .await
            .unwrap();
            let bytes: usize = page.data.iter().map(|t| t.len() + 2).sum();
            assert!(bytes <= MAX_PAGE_BYTES + size + 2, "{bytes}");
            assert!(page.data.len() <= limit as usize);
            page_sizes.push(page.data.len());
            let first = seen.len() as u32 + 1;
            seen.extend((first..first + page.data.len() as u32).map(|i| i as usize));
            match page.next_cursor {
                Some(cursor) => after = Some(cursor.parse().unwrap()),
                None => break,
            }
            assert!(page_sizes.len() <= count as usize + 1, "no progress");
        }
        assert_eq!(seen, (1..=count as usize).collect::<Vec<_>>());
        page_sizes
    }

    #[tokio::test]
    async fn chunked_pages_are_cut_by_bytes_and_by_rows_and_walk_every_row() {
        // Large rows: cut by bytes (about 16 of 64 KiB per MiB).
        let sizes = walk(40, 64 * 1024, 200).await;
        assert!(sizes.len() >= 3 && sizes[0] < 40, "{sizes:?}");
        // Small rows: cut by rows, across chunk boundaries, and an exact multiple of the chunk.
        assert_eq!(walk(60, 10, 50).await, vec![50, 10]);
        assert_eq!(walk(50, 10, 50).await, vec![50, 0]);
        assert_eq!(walk(25, 10, 200).await, vec![25]);
    }
}
