//! Templates and assistants, read-only: each template at its current version with its steps,
//! stop conditions and calling hours; each assistant with its channel. Changes go through the
//! API (`PUT /v1/sequence-templates/{id}` makes a new version; running sequences keep theirs).
//! The page also carries the CSV enrollment form (`super::enroll`).

use std::collections::HashMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use clarion_scheduler::definition::TemplateDefinition;
use clarion_store::{AssistantId, Channel, IdKind};
use maud::html;

use super::page::{Nav, UiError, layout, respond, utc};
use super::session::Viewer;
use crate::AppState;

/// A duration in milliseconds as the API spells it (`90m` → `1h 30m`).
fn human(ms: u64) -> String {
    humantime::format_duration(std::time::Duration::from_millis(ms)).to_string()
}

fn channel_name(channel: Channel) -> &'static str {
    match channel {
        Channel::Call => "call",
        Channel::Sms => "text",
    }
}

/// `GET /ui/templates`.
pub async fn page(State(state): State<AppState>, viewer: Viewer) -> Result<Response, UiError> {
    let ids = state.store.public_ids(viewer.org);
    let templates = state.store.list_templates(viewer.org, None, 200).await?;
    let assistants = state.store.list_assistants(viewer.org, None, 200).await?;
    let names: HashMap<AssistantId, &str> =
        assistants.iter().map(|a| (a.id, a.name.as_str())).collect();
    let body = html! {
        h1 { "Templates and assistants" }
        p { "Read-only. Change them through the API: a changed template gets a new version, and \
             running sequences keep the version they were enrolled on." }
        @if !templates.is_empty() {
            section.enroll aria-labelledby="h-enroll" {
                h2 id="h-enroll" { "Enroll from a CSV file" }
                p {
                    "A header row, then one patient a row: " code { "phone_number" } " (E.164) and "
                    code { "time_zone" } " (IANA, e.g. America/Chicago) are required, "
                    code { "name" } " and " code { "external_id" } " optional; every other column                      is a template variable. At most " (crate::routes::sequences::MAX_BATCH)
                    " rows and 2 MiB a file (clarion enroll takes larger files). Each rejected row                      is listed with its line and reason."
                }
                form.filters method="post" action="/ui/templates/enroll" enctype="multipart/form-data" {
                    input type="hidden" name="csrf_token" value=(viewer.csrf);
                    div.field {
                        label for="enroll-template" { "Template" }
                        select id="enroll-template" name="template" required {
                            @for template in &templates {
                                option value=(ids.encode(IdKind::Template, template.template_id.0)) { (template.name) }
                            }
                        }
                    }
                    div.field.grow {
                        label for="enroll-file" { "CSV file" }
                        input id="enroll-file" name="file" type="file" accept=".csv,text/csv" required;
                    }
                    div.actions { button type="submit" { "Enroll" } }
                }
            }
        }
        h2 { "Sequence templates" }
        @if templates.is_empty() {
            p.empty { "No template yet. Create one with POST /v1/sequence-templates." }
        }
        @for template in &templates {
            @let definition = serde_json::from_value::<TemplateDefinition>(template.definition.clone()).ok();
            article.encounter {
                h3 { (template.name) " " span.badge { "version " (template.version) } }
                dl.facts {
                    dt { "Id" } dd { (ids.encode(IdKind::Template, template.template_id.0)) }
                    dt { "Updated" } dd { (utc(template.updated_at)) }
                    @if let Some(definition) = &definition {
                        dt { "Calling hours" } dd {
                            @match &definition.calling_hours {
                                Some(hours) => { (hours.start) "–" (hours.end) " in the contact's time zone" }
                                None => { "the organisation's default window" }
                            }
                        }
                        dt { "Stops on" } dd { (definition.stop_on.join(", ")) }
                    }
                }
                @if let Some(definition) = &definition {
                    div.scroll {
                        table.steps {
                            caption.visually-hidden { "Steps" }
                            thead { tr { th scope="col" { "Step" } th scope="col" { "Channel" } th scope="col" { "Assistant" } th scope="col" { "Delay" } th scope="col" { "Attempts" } th scope="col" { "Retry after" } } }
                            tbody {
                                @for (index, step) in definition.steps.iter().enumerate() {
                                    tr {
                                        td { (index + 1) }
                                        td { (channel_name(step.channel)) }
                                        td { (names.get(&AssistantId(step.assistant_id)).copied().unwrap_or("—")) }
                                        td { (human(step.delay_ms)) }
                                        td { (step.max_attempts) }
                                        td { (human(step.retry_delay_ms)) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        h2 { "Assistants" }
        @if assistants.is_empty() {
            p.empty { "No assistant yet. Create one with POST /v1/assistants." }
        } @else {
            div.scroll {
                table.assistants {
                    caption.visually-hidden { "Assistants" }
                    thead { tr { th scope="col" { "Assistant" } th scope="col" { "Id" } th scope="col" { "Channel" } th scope="col" { "Updated (UTC)" } } }
                    tbody {
                        @for assistant in &assistants {
                            tr {
                                td { (assistant.name) }
                                td { (ids.encode(IdKind::Assistant, assistant.id.0)) }
                                td { (channel_name(assistant.channel)) }
                                td { (utc(assistant.updated_at)) }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(respond(
        StatusCode::OK,
        layout("Templates", Some(viewer.frame(Nav::Templates)), body),
    ))
}
