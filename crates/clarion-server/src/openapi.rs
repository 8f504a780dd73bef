//! The OpenAPI document, generated from the handlers and wire types.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::{
    assistants, deliveries, endpoints, organization, providers, reports, sequences, suppressions,
    templates,
};

#[derive(OpenApi)]
#[openapi(
    info(title = "Clarion API", description = "Patient-outreach sequences and their End of Sequence Report webhooks.\n\nEvery error, on every operation, is `{\"error\": {\"code\", \"message\", \"field\"}}`. Besides each operation's own answers, any request may be answered 400 `invalid_request` (not well-formed HTTP), 408 `request_timeout` (its body did not arrive within the server's body timeout; the connection is closed), 413 `payload_too_large` (a body over 2 MiB), 414 `uri_too_long` (a request target over 8 KiB) or 431 `headers_too_large` (over 100 headers or 64 KiB of head). Free-form fields are bounded in size, depth and entries (422 `invalid_field` naming the field), and list pages hold at most 1 MiB of items: a page may end before `limit` rows, with a `next_cursor`. `POST /v1/sequences` binds an `Idempotency-Key` to its request: the same key with a different body is 422 `idempotency_key_reused`."),
    paths(
        endpoints::create, endpoints::list, endpoints::get, endpoints::update, endpoints::delete,
        endpoints::secret, endpoints::rotate_secret, endpoints::send_test,
        deliveries::list, deliveries::get, deliveries::retry,
        reports::list,
        assistants::create, assistants::list, assistants::get,
        templates::create, templates::list, templates::get, templates::replace,
        sequences::enroll, sequences::enroll_batch, sequences::get, sequences::list,
        sequences::cancel, sequences::pause, sequences::resume, sequences::events,
        suppressions::list, suppressions::create, suppressions::delete, suppressions::history,
        organization::get, organization::update,
        providers::vapi_events, providers::twilio_inbound, providers::twilio_status,
    ),
    modifiers(&BearerKey),
)]
struct ApiDoc;

struct BearerKey;

impl Modify for BearerKey {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The OpenAPI document as JSON.
pub fn openapi_document() -> serde_json::Value {
    serde_json::to_value(ApiDoc::openapi()).unwrap_or_default()
}
