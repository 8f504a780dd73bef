//! `DELETE /v1/contacts/{phone_number}`: a patient's right-of-erasure request. Erases the PHI
//! of every sequence of the number in the calling organisation (the scheduler's
//! `erase_contact`; what is erased and what is kept: README, "Privacy"), refuses while one of
//! them runs unless `?cancel=true`, and answers the counts. The suppression list is not
//! touched. The request is recorded in the access log (`GET /v1/audit-log`) without the number.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use clarion_scheduler::EraseOutcome;
use clarion_store::NewAccessEntry;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiQuery, OrgCaller};
use crate::routes::sequences::scheduler_error;
use crate::routes::suppressions::public_actor;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EraseQuery {
    /// `true`: cancel the number's running sequences first.
    pub cancel: Option<bool>,
}

/// What an erasure did.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErasureOut {
    /// Running sequences cancelled first (`cancel=true`).
    pub cancelled: u64,
    /// The number's sequences whose PHI is erased (every one of the organisation's, ended).
    pub sequences: u64,
    /// Their encounters (calls and text conversations).
    pub encounters: u64,
    /// Their stored report bodies, rewritten without PHI.
    pub report_bodies: u64,
}

#[utoipa::path(delete, path = "/v1/contacts/{phone_number}", tag = "contacts",
    params(
        ("phone_number" = String, Path, description = "E.164, `+` URL-encoded as `%2B`"),
        ("cancel" = Option<bool>, Query, description = "Cancel the number's running (active or paused) sequences first; without it such a request is refused (409 `contact_running`)"),
    ),
    responses((status = 200, body = ErasureOut, description = "Erased (counts may be 0: nothing of this number was stored)"),
               (status = 409, body = ErrorBody, description = "`contact_running`: a sequence of the number is running; nothing was erased"),
               (status = 422, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn erase(
    State(state): State<AppState>,
    caller: OrgCaller,
    Path(phone_number): Path<String>,
    ApiQuery(query): ApiQuery<EraseQuery>,
) -> Result<Json<ErasureOut>, ApiError> {
    let number = phone_number.trim();
    clarion_scheduler::definition::validate_e164("phone_number", number)
        .map_err(|e| ApiError::invalid(&e.field, e.message))?;
    let cancel = query.cancel.unwrap_or(false);
    let outcome = state
        .scheduler
        .erase_contact(caller.org, number, cancel)
        .await
        .map_err(|e| scheduler_error(e, ""))?;
    let erasure = match outcome {
        EraseOutcome::Erased(erasure) => erasure,
        EraseOutcome::Running(running) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "contact_running",
                format!(
                    "{running} sequence(s) of this number are running; cancel them first or \
                     send the request with ?cancel=true"
                ),
            )
            .with_field("cancel"));
        }
    };
    let ids = state.store.public_ids(caller.org);
    let detail = serde_json::json!({
        "cancelled": erasure.cancelled,
        "sequences": erasure.sequences,
        "encounters": erasure.encounters,
        "report_bodies": erasure.report_bodies,
    })
    .to_string();
    state
        .store
        .record_access(&NewAccessEntry {
            org_id: caller.org,
            at: state.clock.now_millis(),
            actor: &public_actor(&ids, caller.actor()),
            action: "contact.erased",
            sequence_id: None,
            detail: &detail,
        })
        .await?;
    Ok(Json(ErasureOut {
        cancelled: erasure.cancelled,
        sequences: erasure.sequences,
        encounters: erasure.encounters,
        report_bodies: erasure.report_bodies,
    }))
}
