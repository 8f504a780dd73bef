//! `/v1/suppressions`: the organisation's do-not-contact list. Opt-outs land here; enrolling a
//! listed number is refused, and a running sequence whose number gets listed ends without
//! further contact.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiQuery, Org};
use crate::wire::{self, Page};

#[derive(Debug, Serialize, ToSchema)]
pub struct SuppressionOut {
    pub phone_number: String,
    /// `opt-out` when the contact opted out; what the caller said otherwise.
    pub reason: String,
    pub created_at: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SuppressionIn {
    pub phone_number: String,
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub limit: Option<u32>,
    pub after: Option<String>,
}

#[utoipa::path(get, path = "/v1/suppressions", tag = "suppressions",
    params(("limit" = Option<u32>, Query), ("after" = Option<String>, Query)),
    responses((status = 200, body = inline(Page<SuppressionOut>))), security(("api_key" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Org(org): Org,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<Page<SuppressionOut>>, ApiError> {
    let limit = wire::limit(query.limit)?;
    let entries = state
        .store
        .list_suppressions(org, query.after.as_deref(), limit)
        .await?;
    let next_cursor = (entries.len() == limit as usize)
        .then(|| entries.last().map(|e| e.phone_number.clone()))
        .flatten();
    let data = entries
        .into_iter()
        .map(|e| SuppressionOut {
            phone_number: e.phone_number,
            reason: e.reason,
            created_at: wire::time(e.created_at),
        })
        .collect();
    Ok(Json(Page { data, next_cursor }))
}

#[utoipa::path(post, path = "/v1/suppressions", tag = "suppressions", request_body = SuppressionIn,
    responses((status = 201, body = SuppressionOut), (status = 422, body = ErrorBody)), security(("api_key" = [])))]
pub async fn create(
    State(state): State<AppState>,
    Org(org): Org,
    ApiJson(body): ApiJson<SuppressionIn>,
) -> Result<(StatusCode, Json<SuppressionOut>), ApiError> {
    let number = body.phone_number.trim();
    clarion_scheduler::definition::validate_e164("phone_number", number)
        .map_err(|e| ApiError::invalid(&e.field, e.message))?;
    let reason = body
        .reason
        .unwrap_or_else(|| "added through the API".to_owned());
    let now = state.clock.now_millis();
    let mut tx = state.store.begin().await?;
    state
        .store
        .suppress(&mut tx, org, number, &reason, now)
        .await?;
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(SuppressionOut {
            phone_number: number.to_owned(),
            reason,
            created_at: wire::time(now),
        }),
    ))
}

#[utoipa::path(delete, path = "/v1/suppressions/{phone_number}", tag = "suppressions",
    responses((status = 204), (status = 404, body = ErrorBody)), security(("api_key" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    Org(org): Org,
    Path(phone_number): Path<String>,
) -> Result<StatusCode, ApiError> {
    if state.store.unsuppress(org, phone_number.trim()).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("suppression"))
    }
}
