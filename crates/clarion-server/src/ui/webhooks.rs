//! The webhook endpoints pages: each endpoint with its deliveries and their attempts; rotate
//! its secret (the new secret shown once, on the answer to the form, never in an address),
//! send a test report, retry a delivery. The actions are the API's own
//! (`routes::endpoints::rotate`, `queue_test`, `routes::deliveries::queue_retry`): the same
//! ownership checks and the same per-endpoint rate limits.

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use clarion_store::{
    Delivery, DeliveryFilter, DeliveryId, DeliveryStatus, Endpoint, EndpointId, IdKind, PublicIds,
};
use maud::{Markup, html};
use serde::Deserialize;

use super::page::{Nav, UiError, badge, layout, respond, utc, utc_opt};
use super::session::{Viewer, read_form};
use crate::AppState;

/// Deliveries shown on an endpoint's page.
const MAX_DELIVERIES: u32 = 50;

fn delivery_status(status: DeliveryStatus) -> &'static str {
    match status {
        DeliveryStatus::Pending => "pending",
        DeliveryStatus::Delivered => "delivered",
        DeliveryStatus::Failed => "failed",
    }
}

/// One delivery with its attempts, and a retry button once it has finished (delivered or
/// failed); the retry comes back to `back`.
pub(super) fn delivery_view(
    ids: &PublicIds,
    delivery: &Delivery,
    csrf: &str,
    back: &str,
) -> Markup {
    let public = ids.encode(IdKind::Delivery, delivery.id.0);
    let endpoint = ids.encode(IdKind::Endpoint, delivery.endpoint_id.0);
    html! {
        article.delivery {
            h3 {
                "Delivery " (public) " to " a href=(format!("/ui/webhooks/{endpoint}")) { "endpoint " (endpoint) }
                " " (badge(delivery_status(delivery.status)))
            }
            dl.facts {
                dt { "Event" } dd { (delivery.event_type) @if delivery.is_test { " (test)" } }
                dt { "webhook-id" } dd { code { (delivery.webhook_id) } }
                dt { "Queued" } dd { (utc(delivery.created_at)) }
                dt { "Next attempt" } dd { (utc_opt(delivery.next_attempt_at)) }
            }
            @if delivery.attempts.is_empty() {
                p { "Not attempted yet." }
            } @else {
                div.scroll {
                    table.attempts {
                        caption.visually-hidden { "Attempts" }
                        thead { tr { th scope="col" { "#" } th scope="col" { "When (UTC)" } th scope="col" { "HTTP status" } th scope="col" { "Took" } th scope="col" { "Error" } th scope="col" { "Response" } } }
                        tbody {
                            @for attempt in &delivery.attempts {
                                tr {
                                    td { (attempt.attempt_number) }
                                    td { (utc(attempt.attempted_at)) }
                                    td { (attempt.status_code.map_or("—".to_owned(), |c| c.to_string())) }
                                    td { (attempt.duration_ms) " ms" }
                                    td { (attempt.error.as_deref().unwrap_or("—")) }
                                    td { code { (attempt.response_body.as_deref().map(String::from_utf8_lossy).unwrap_or_default()) } }
                                }
                            }
                        }
                    }
                }
            }
            @if delivery.status != DeliveryStatus::Pending {
                form method="post" action=(format!("/ui/deliveries/{public}/retry")) {
                    input type="hidden" name="csrf_token" value=(csrf);
                    input type="hidden" name="back" value=(back);
                    button.secondary type="submit" { "Retry now" }
                }
            }
        }
    }
}

/// `GET /ui/webhooks`: the organisation's endpoints.
pub async fn list(State(state): State<AppState>, viewer: Viewer) -> Result<Response, UiError> {
    let ids = state.store.public_ids(viewer.org);
    let endpoints = state.store.list_endpoints(viewer.org, None, 200).await?;
    let body = html! {
        h1 { "Webhook endpoints" }
        h2 { "Add an endpoint" }
        form.filters method="post" action="/ui/webhooks" aria-label="Add an endpoint" {
            input type="hidden" name="csrf_token" value=(viewer.csrf);
            div.field.grow {
                label for="e-url" { "URL (https)" }
                input id="e-url" name="url" type="url" required placeholder="https://example.org/clarion" autocomplete="off";
            }
            div.field.grow {
                label for="e-description" { "Description" }
                input id="e-description" name="description" maxlength="1000";
            }
            div.actions { button type="submit" { "Add endpoint" } }
        }
        h2 { "Endpoints" }
        @if endpoints.is_empty() {
            p.empty { "No endpoint yet. Add one above (or with POST /v1/webhook-endpoints); every \
                       ended sequence's report is then delivered to it." }
        } @else {
            div.scroll {
                table {
                    caption.visually-hidden { "Webhook endpoints" }
                    thead { tr { th scope="col" { "Endpoint" } th scope="col" { "URL" } th scope="col" { "Description" } th scope="col" { "State" } th scope="col" { "Created (UTC)" } } }
                    tbody {
                        @for endpoint in &endpoints {
                            @let public = ids.encode(IdKind::Endpoint, endpoint.id.0);
                            tr {
                                td { a href=(format!("/ui/webhooks/{public}")) { (public) } }
                                td { code { (endpoint.url) } }
                                td { (endpoint.description) }
                                td { (state_badge(endpoint)) }
                                td { (utc(endpoint.created_at)) }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(respond(
        StatusCode::OK,
        layout("Webhook endpoints", Some(viewer.frame(Nav::Webhooks)), body),
    ))
}

fn state_badge(endpoint: &Endpoint) -> Markup {
    html! {
        @if endpoint.enabled { (badge("enabled")) } @else { span class="badge warn" { "disabled" } }
    }
}

/// The endpoint a public id in a path names, if it is the viewer's organisation's.
async fn endpoint_of(state: &AppState, viewer: &Viewer, public: &str) -> Result<Endpoint, UiError> {
    let ids = state.store.public_ids(viewer.org);
    let id = EndpointId(super::page::internal_id(
        &ids,
        IdKind::Endpoint,
        public,
        "webhook endpoint",
    )?);
    state
        .store
        .get_endpoint(viewer.org, id)
        .await?
        .ok_or_else(|| UiError::not_found("webhook endpoint"))
}

/// An endpoint's page; `new_secret` is shown once, right after a rotation.
async fn endpoint_page(
    state: &AppState,
    viewer: &Viewer,
    endpoint: &Endpoint,
    new_secret: Option<&str>,
) -> Result<Response, UiError> {
    let ids = state.store.public_ids(viewer.org);
    let public = ids.encode(IdKind::Endpoint, endpoint.id.0);
    let deliveries = state
        .store
        .list_deliveries(
            viewer.org,
            &DeliveryFilter {
                endpoint_id: Some(endpoint.id),
                ..DeliveryFilter::default()
            },
            None,
            MAX_DELIVERIES,
        )
        .await?;
    let action = |path: &str, label: &str| {
        html! {
            form method="post" action=(format!("/ui/webhooks/{public}/{path}")) {
                input type="hidden" name="csrf_token" value=(viewer.csrf);
                button.secondary type="submit" { (label) }
            }
        }
    };
    let back = format!("/ui/webhooks/{public}");
    let body = html! {
        p.crumbs { a href="/ui/webhooks" { "← Webhook endpoints" } }
        h1 { "Endpoint " (public) " " (state_badge(endpoint)) }
        @if let Some(secret) = new_secret {
            div.notice role="status" {
                p { strong { "New signing secret. " } "Copy it now: it is not shown again. After a \
                    rotation the previous secret keeps signing alongside it for 24 hours." }
                p { code.secret { (secret) } }
            }
        }
        dl.facts {
            dt { "URL" } dd { code { (endpoint.url) } }
            dt { "Description" } dd { (endpoint.description) }
            @if let Some(reason) = &endpoint.disabled_reason { dt { "Disabled because" } dd { (reason) } }
            dt { "Created" } dd { (utc(endpoint.created_at)) }
        }
        div.controls role="group" aria-label="Endpoint actions" {
            @if endpoint.enabled { (action("disable", "Disable")) } @else { (action("enable", "Enable")) }
            (action("rotate-secret", "Rotate secret"))
            (action("test", "Send a test report"))
        }
        h2 { "Deliveries" }
        @if deliveries.is_empty() {
            p.empty { "Nothing delivered to this endpoint yet. Send a test report to check it." }
        }
        @for delivery in &deliveries {
            (delivery_view(&ids, delivery, &viewer.csrf, &back))
        }
    };
    Ok(respond(
        StatusCode::OK,
        layout(
            &format!("Endpoint {public}"),
            Some(viewer.frame(Nav::Webhooks)),
            body,
        ),
    ))
}

/// `GET /ui/webhooks/{id}`.
pub async fn detail(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(public): Path<String>,
) -> Result<Response, UiError> {
    let endpoint = endpoint_of(&state, &viewer, &public).await?;
    endpoint_page(&state, &viewer, &endpoint, None).await
}

#[derive(Debug, Deserialize)]
pub struct ActionForm {
    csrf_token: Option<String>,
    back: Option<String>,
}

/// `POST /ui/webhooks/{id}/{rotate-secret|test}`.
pub async fn action(
    State(state): State<AppState>,
    viewer: Viewer,
    Path((public, action)): Path<(String, String)>,
    request: Request,
) -> Result<Response, UiError> {
    let form: ActionForm = read_form(request.into_body()).await?;
    viewer.check_csrf(form.csrf_token.as_deref())?;
    let endpoint = endpoint_of(&state, &viewer, &public).await?;
    match action.as_str() {
        "rotate-secret" => {
            let (endpoint, secret) =
                crate::routes::endpoints::rotate(&state, viewer.org, endpoint.id).await?;
            endpoint_page(&state, &viewer, &endpoint, Some(&secret)).await
        }
        "test" => {
            crate::routes::endpoints::queue_test(&state, viewer.org, endpoint.id).await?;
            Ok(Redirect::to(&format!("/ui/webhooks/{public}")).into_response())
        }
        "enable" | "disable" => {
            let change = crate::routes::endpoints::UpdateEndpoint {
                url: None,
                description: None,
                enabled: Some(action == "enable"),
                event_types: None,
            };
            crate::routes::endpoints::update_endpoint(&state, viewer.org, endpoint.id, change)
                .await?;
            Ok(Redirect::to(&format!("/ui/webhooks/{public}")).into_response())
        }
        _ => Err(UiError::not_found("action")),
    }
}

/// `POST /ui/deliveries/{id}/retry`: back to the page the form came from (a dashboard path
/// only, never another site).
pub async fn retry(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(public): Path<String>,
    request: Request,
) -> Result<Response, UiError> {
    let form: ActionForm = read_form(request.into_body()).await?;
    viewer.check_csrf(form.csrf_token.as_deref())?;
    let ids = state.store.public_ids(viewer.org);
    let id = DeliveryId(super::page::internal_id(
        &ids,
        IdKind::Delivery,
        &public,
        "webhook delivery",
    )?);
    crate::routes::deliveries::queue_retry(&state, viewer.org, id).await?;
    let back = form
        .back
        .filter(|b| {
            // A dashboard path of plain characters only: never another site, never a
            // character a Location header could not carry.
            b.starts_with("/ui/")
                && b.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'/' | b'-' | b'_'))
        })
        .unwrap_or_else(|| "/ui/webhooks".to_owned());
    Ok(Redirect::to(&back).into_response())
}

#[derive(Debug, Deserialize)]
pub struct CreateForm {
    csrf_token: Option<String>,
    #[serde(default)]
    url: String,
    #[serde(default)]
    description: String,
}

/// `POST /ui/webhooks`: creates an endpoint and shows its secret, once.
pub async fn create(
    State(state): State<AppState>,
    viewer: Viewer,
    request: Request,
) -> Result<Response, UiError> {
    let form: CreateForm = read_form(request.into_body()).await?;
    viewer.check_csrf(form.csrf_token.as_deref())?;
    let (endpoint, secret) = crate::routes::endpoints::create_endpoint(
        &state,
        viewer.org,
        form.url.trim(),
        form.description.trim(),
    )
    .await?;
    endpoint_page(&state, &viewer, &endpoint, Some(&secret)).await
}
