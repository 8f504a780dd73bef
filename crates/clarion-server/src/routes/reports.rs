//! `/v1/reports`: the pull API. Ended sequences' reports in the order they were queued, so a
//! receiver back from an outage can catch up without depending on webhooks.

use axum::Json;
use axum::extract::State;
use clarion_store::IdKind;
use clarion_webhooks::EVENT_TYPE_SEQUENCE_ENDED;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiQuery, Org};
use crate::wire::{self, Page};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub limit: Option<u32>,
    pub after: Option<String>,
}

#[utoipa::path(get, path = "/v1/reports", tag = "reports",
    params(("limit" = Option<u32>, Query), ("after" = Option<String>, Query)),
    responses((status = 200, description = "`{\"data\": [End of Sequence Report, ...], \"next_cursor\"}`; each report is byte for byte the delivered body"),
               (status = 422, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Org(org): Org,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<Page<Box<RawValue>>>, ApiError> {
    let ids = state.store.public_ids(org);
    let limit = wire::limit(query.limit)?;
    let after = wire::cursor(&ids, IdKind::Message, query.after.as_deref())?;
    let store = &state.store;
    let page = wire::bounded_page_in_chunks(
        limit,
        after,
        |after, n| async move {
            Ok(store
                .list_reports(org, EVENT_TYPE_SEQUENCE_ENDED, after, n)
                .await?)
        },
        |report| {
            let cursor = wire::next_cursor(&ids, IdKind::Message, report.message_id.0);
            let id = report.message_id;
            let text = String::from_utf8(report.body).map_err(|_| {
                ApiError::internal(&clarion_store::StoreError::Corrupt(
                    "report body is not UTF-8",
                ))
            })?;
            let body = RawValue::from_string(text).map_err(|_| {
                ApiError::internal(&clarion_store::StoreError::Corrupt(
                    "report body is not JSON",
                ))
            })?;
            Ok((body, cursor, id))
        },
    )
    .await?;
    Ok(Json(page))
}
