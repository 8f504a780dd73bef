//! The OpenAPI document, generated from the handlers and wire types.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::{
    assistants, deliveries, endpoints, organization, providers, reports, sequences, suppressions,
    templates,
};

#[derive(OpenApi)]
#[openapi(
    info(title = "Clarion API", description = "Patient-outreach sequences and their End of Sequence Report webhooks."),
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
