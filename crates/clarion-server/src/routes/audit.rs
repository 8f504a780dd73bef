//! `GET /v1/audit-log`: the organisation's PHI access log (every view of a sequence's detail
//! and every export in the dashboard: who, what, when), oldest first, cursor-paged.

use axum::Json;
use axum::extract::State;
use clarion_store::IdKind;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiQuery, Org};
use crate::wire::{self, Page};

/// One access to patient data.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccessEntryOut {
    pub id: i64,
    pub at: String,
    /// Who: `ui-session:<reference> api-key:<id>` for the dashboard.
    pub actor: String,
    /// `sequence.viewed`, `sequences.exported` or `encounters.exported`.
    pub action: String,
    /// The sequence viewed, or null for an export.
    pub sequence_id: Option<i64>,
    /// An export's filters and row counts; never patient data.
    pub detail: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub limit: Option<u32>,
    pub after: Option<String>,
}

#[utoipa::path(get, path = "/v1/audit-log", tag = "audit",
    params(("limit" = Option<u32>, Query), ("after" = Option<String>, Query)),
    responses((status = 200, body = inline(Page<AccessEntryOut>)), (status = 422, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Org(org): Org,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<Page<AccessEntryOut>>, ApiError> {
    let ids = state.store.public_ids(org);
    let limit = wire::limit(query.limit)?;
    let after = wire::raw_cursor(&ids, IdKind::AccessEntry, query.after.as_deref())?;
    let entries = state.store.access_log(org, after, false, limit).await?;
    let rows = entries
        .into_iter()
        .map(|entry| {
            let cursor = wire::next_cursor(&ids, IdKind::AccessEntry, entry.id);
            let out = AccessEntryOut {
                id: ids.encode(IdKind::AccessEntry, entry.id),
                at: wire::time(entry.at),
                actor: entry.actor,
                action: entry.action,
                sequence_id: entry
                    .sequence_id
                    .map(|id| ids.encode(IdKind::Sequence, id.0)),
                detail: entry.detail,
            };
            (out, cursor)
        })
        .collect();
    Ok(Json(wire::bounded_page(rows, limit)))
}
