//! The OpenAPI document, generated from the handlers and wire types.
//!
//! utoipa builds it from the `#[utoipa::path]` attributes; [`openapi_document`] then completes
//! what every operation shares, so that no route can forget it and the document says what the
//! server really answers: the path parameters of every templated path, an operation id unique
//! across the document, the bounds of `limit` as `wire::limit` enforces them, the refusals any
//! operation may give (400, 401, 404, 413, 415, 422, each with the `ErrorBody` schema), and the
//! End of Sequence Report's own JSON Schema as the body of the sequence operations.

use serde_json::{Value, json};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::{
    assistants, audit, caller_numbers, contacts, deliveries, endpoints, organization, providers,
    recoveries, reports, sequences, suppressions, templates,
};

#[derive(OpenApi)]
#[openapi(
    info(title = "Clarion API", description = "Patient-outreach sequences and their End of Sequence Report webhooks.\n\nEvery error, on every operation, is `{\"error\": {\"code\", \"message\", \"field\"}}`. Besides each operation's own answers, any request may be answered 400 `invalid_request` (not well-formed HTTP), 408 `request_timeout` (its body did not arrive within the server's body timeout; the connection is closed), 413 `payload_too_large` (a body over 2 MiB), 414 `uri_too_long` (a request target over 8 KiB) or 431 `headers_too_large` (over 100 headers or 64 KiB of head). Free-form fields are bounded in size, depth and entries (422 `invalid_field` naming the field), and list pages hold at most 1 MiB of items: a page may end before `limit` rows, with a `next_cursor`. `POST /v1/sequences` binds an `Idempotency-Key` to its request: the same key with a different body is 422 `idempotency_key_reused`."),
    paths(
        endpoints::create, endpoints::list, endpoints::get, endpoints::update, endpoints::delete,
        endpoints::secret, endpoints::rotate_secret, endpoints::send_test, endpoints::stats,
        recoveries::recover, recoveries::get,
        deliveries::list, deliveries::get, deliveries::retry,
        reports::list,
        audit::list,
        assistants::create, assistants::list, assistants::get,
        caller_numbers::create, caller_numbers::list, caller_numbers::get,
        caller_numbers::update, caller_numbers::delete,
        templates::create, templates::list, templates::get, templates::replace,
        sequences::enroll, sequences::enroll_batch, sequences::get, sequences::list,
        sequences::cancel, sequences::pause, sequences::resume, sequences::events,
        suppressions::list, suppressions::create, suppressions::delete, suppressions::history,
        organization::get, organization::update,
        contacts::erase,
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
    let mut document = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    add_report_schemas(&mut document);
    if let Some(paths) = document.get_mut("paths").and_then(Value::as_object_mut) {
        for (path, item) in paths.iter_mut() {
            let Some(operations) = item.as_object_mut() else {
                continue;
            };
            for (method, operation) in operations.iter_mut() {
                if HTTP_METHODS.contains(&method.as_str()) {
                    complete_operation(path, method, operation);
                }
            }
        }
    }
    document
}

const HTTP_METHODS: &[&str] = &["get", "put", "post", "delete", "patch", "head", "options"];

/// The component that holds the report's root schema.
const REPORT_COMPONENT: &str = "EndOfSequenceReport";

/// The sequence operations whose bodies are the report's shape, and how: one report or a page.
const REPORT_BODIES: &[(&str, &str, &[&str], bool)] = &[
    ("/v1/sequences", "post", &["200", "201"], false),
    ("/v1/sequences", "get", &["200"], true),
    ("/v1/sequences/{id}", "get", &["200"], false),
    ("/v1/sequences/{id}/cancel", "post", &["200"], false),
    ("/v1/sequences/{id}/pause", "post", &["200"], false),
    ("/v1/sequences/{id}/resume", "post", &["200"], false),
    ("/v1/reports", "get", &["200"], true),
];

/// Puts the published report schema (the receivers' contract) into `components.schemas`, its
/// `$defs` beside it as `Report<Name>`, and makes it the body of the sequence operations.
fn add_report_schemas(document: &mut Value) {
    let mut report = clarion_webhooks::schema::report_schema();
    let defs = report
        .as_object_mut()
        .and_then(|root| {
            for key in ["$schema", "$id", "title"] {
                root.remove(key);
            }
            root.remove("$defs")
        })
        .unwrap_or_default();
    let mut schemas = vec![(REPORT_COMPONENT.to_owned(), report)];
    if let Value::Object(defs) = defs {
        schemas.extend(
            defs.into_iter()
                .map(|(name, schema)| (format!("Report{name}"), schema)),
        );
    }
    let Some(components) = document
        .as_object_mut()
        .map(|d| d.entry("components").or_insert_with(|| json!({})))
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    let Some(target) = components
        .entry("schemas")
        .or_insert_with(|| json!({}))
        .as_object_mut()
    else {
        return;
    };
    for (name, mut schema) in schemas {
        rewrite_defs_refs(&mut schema);
        target.insert(name, schema);
    }
    let report_ref = json!({ "$ref": format!("#/components/schemas/{REPORT_COMPONENT}") });
    for (path, method, statuses, paged) in REPORT_BODIES {
        for status in *statuses {
            let Some(response) = document.pointer_mut(&format!(
                "/paths/{}/{method}/responses/{status}",
                path.replace('~', "~0").replace('/', "~1")
            )) else {
                continue;
            };
            let schema = if *paged {
                json!({
                    "type": "object",
                    "required": ["data", "next_cursor"],
                    "properties": {
                        "data": { "type": "array", "items": report_ref },
                        "next_cursor": { "type": ["string", "null"] },
                    },
                })
            } else {
                report_ref.clone()
            };
            response["content"] = json!({ "application/json": { "schema": schema } });
        }
    }
}

/// `#/$defs/Name` becomes `#/components/schemas/ReportName`, wherever it appears.
fn rewrite_defs_refs(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map.iter_mut() {
                if key == "$ref" {
                    if let Some(name) = inner.as_str().and_then(|r| r.strip_prefix("#/$defs/")) {
                        *inner = format!("#/components/schemas/Report{name}").into();
                    }
                } else {
                    rewrite_defs_refs(inner);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(rewrite_defs_refs),
        _ => {}
    }
}

/// The names between braces in a path template, in order.
fn path_parameters(path: &str) -> Vec<&str> {
    path.split('/')
        .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
        .collect()
}

/// Adds to one operation what every operation of its kind shares (see the module docs).
fn complete_operation(path: &str, method: &str, operation: &mut Value) {
    let Some(op) = operation.as_object_mut() else {
        return;
    };
    // utoipa names an operation after its handler (`create`, `list`, ...), which repeats
    // across modules; the method and path are unique.
    op.insert("operationId".to_owned(), operation_id(method, path).into());

    let parameters = op
        .entry("parameters")
        .or_insert_with(|| json!([]))
        .as_array_mut();
    let mut has_query = false;
    if let Some(parameters) = parameters {
        for name in path_parameters(path) {
            let declared = parameters
                .iter()
                .any(|p| p["in"] == "path" && p["name"] == name);
            if !declared {
                // Ids are integers (`IdPath`); a phone number is an E.164 string.
                let schema = if name == "id" {
                    json!({ "type": "integer", "format": "int64" })
                } else {
                    json!({ "type": "string" })
                };
                parameters.push(json!({
                    "name": name, "in": "path", "required": true, "schema": schema,
                }));
            }
        }
        for parameter in parameters.iter_mut() {
            if parameter["in"] == "query" {
                has_query = true;
                if parameter["name"] == "limit" {
                    parameter["schema"] = json!({
                        "type": "integer", "format": "int32",
                        "minimum": 1, "maximum": crate::wire::MAX_LIMIT,
                        "default": crate::wire::DEFAULT_LIMIT,
                    });
                }
            }
        }
    }
    let has_path_parameters = !path_parameters(path).is_empty();
    let has_body = op.contains_key("requestBody");
    let authenticated = op.contains_key("security");

    let Some(responses) = op
        .entry("responses")
        .or_insert_with(|| json!({}))
        .as_object_mut()
    else {
        return;
    };
    let mut refusals: Vec<(&str, &str)> = vec![(
        "400",
        "`invalid_request`, `invalid_body` or `invalid_json`: the request or its body is not well-formed",
    )];
    if authenticated {
        refusals.push(("401", "`unauthorized`: no API key, or not a valid one"));
    }
    if has_path_parameters {
        refusals.push((
            "404",
            "`not_found`: nothing of this organisation has this id",
        ));
    }
    if has_body {
        refusals.push(("413", "`payload_too_large`: the body is over 2 MiB"));
        refusals.push((
            "415",
            "`unsupported_media_type`: the body is not `application/json`",
        ));
    }
    if has_body || has_query {
        refusals.push((
            "422",
            "`invalid_field`: a field or query parameter is not valid",
        ));
    }
    for (status, description) in refusals {
        responses.entry(status).or_insert_with(|| {
            json!({
                "description": description,
                "content": { "application/json": { "schema": { "$ref": "#/components/schemas/ErrorBody" } } },
            })
        });
    }
}

/// A readable id unique to `method` and `path`: `get /v1/sequences/{id}/events` is
/// `get_v1_sequences_id_events`.
fn operation_id(method: &str, path: &str) -> String {
    let mut id = method.to_owned();
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        id.push('_');
        id.extend(
            segment
                .chars()
                .filter(|c| *c != '{' && *c != '}')
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }),
        );
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every operation of the document with its method and path.
    fn operations(document: &Value) -> Vec<(String, String, Value)> {
        let mut found = Vec::new();
        for (path, item) in document["paths"].as_object().into_iter().flatten() {
            for (method, operation) in item.as_object().into_iter().flatten() {
                if HTTP_METHODS.contains(&method.as_str()) {
                    found.push((path.clone(), method.clone(), operation.clone()));
                }
            }
        }
        found
    }

    fn error_body(document: &Value, response: &Value) -> bool {
        let reference = &response["content"]["application/json"]["schema"]["$ref"];
        reference == "#/components/schemas/ErrorBody"
            && document["components"]["schemas"]["ErrorBody"].is_object()
    }

    /// Issue 14, defect 9: schemathesis could not test 16 operations because their path
    /// parameters were not declared, operation ids repeated, and refusals the server gives were
    /// missing from the document.
    #[test]
    fn every_operation_declares_its_path_parameters_a_unique_id_and_its_refusals() {
        let document = openapi_document();
        let operations = operations(&document);
        assert!(operations.len() >= 36, "{} operations", operations.len());
        let mut ids = std::collections::HashSet::new();
        for (path, method, operation) in &operations {
            let context = format!("{method} {path}");
            let id = operation["operationId"].as_str().unwrap_or_default();
            assert!(!id.is_empty(), "{context}: no operationId");
            assert!(
                ids.insert(id.to_owned()),
                "{context}: operationId {id} repeats"
            );

            let declared: Vec<&str> = operation["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["in"] == "path" && p["required"] == true)
                .filter_map(|p| p["name"].as_str())
                .collect();
            for name in path_parameters(path) {
                assert!(
                    declared.contains(&name),
                    "{context}: {{{name}}} is not declared"
                );
            }

            let responses = &operation["responses"];
            let mut expected = vec!["400"];
            if operation.get("security").is_some() {
                expected.push("401");
            }
            if operation.get("requestBody").is_some() {
                expected.extend(["413", "422"]);
            }
            if !path_parameters(path).is_empty() {
                expected.push("404");
            }
            for status in expected {
                assert!(
                    error_body(&document, &responses[status]),
                    "{context}: {status} is not declared with the ErrorBody schema"
                );
            }
        }
    }

    #[test]
    fn limit_is_declared_with_the_bounds_the_server_enforces() {
        let document = openapi_document();
        let mut seen = 0;
        for (path, method, operation) in operations(&document) {
            for parameter in operation["parameters"].as_array().into_iter().flatten() {
                if parameter["name"] == "limit" {
                    seen += 1;
                    let schema = &parameter["schema"];
                    assert_eq!(schema["minimum"], 1, "{method} {path}");
                    assert_eq!(schema["maximum"], crate::wire::MAX_LIMIT, "{method} {path}");
                    // And the bounds are the enforced ones.
                    assert!(crate::wire::limit(Some(0)).is_err());
                    assert!(crate::wire::limit(Some(crate::wire::MAX_LIMIT + 1)).is_err());
                    assert!(crate::wire::limit(Some(crate::wire::MAX_LIMIT)).is_ok());
                }
            }
        }
        // Every list, the events of a sequence included.
        assert!(seen >= 8, "limit declared on {seen} operations");
    }

    #[test]
    fn sequence_operations_answer_with_the_published_report_schema() {
        let document = openapi_document();
        let report = &document["components"]["schemas"][REPORT_COMPONENT];
        let required: Vec<&str> = report["required"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(required, ["id", "status", "last_updated", "outreach"]);
        assert_eq!(
            report["properties"]["outreach"]["items"]["$ref"],
            "#/components/schemas/ReportOutreachStep"
        );
        assert!(document["components"]["schemas"]["ReportCall"].is_object());
        let text = document.to_string();
        assert!(!text.contains("#/$defs/"), "a $defs reference was left");
        let body = |pointer: &str| {
            document
                .pointer(&format!("{pointer}/content/application~1json/schema"))
                .cloned()
                .unwrap_or_default()
        };
        let reference = json!({ "$ref": "#/components/schemas/EndOfSequenceReport" });
        for pointer in [
            "/paths/~1v1~1sequences/post/responses/201",
            "/paths/~1v1~1sequences~1{id}/get/responses/200",
            "/paths/~1v1~1sequences~1{id}~1cancel/post/responses/200",
            "/paths/~1v1~1sequences~1{id}~1pause/post/responses/200",
            "/paths/~1v1~1sequences~1{id}~1resume/post/responses/200",
        ] {
            assert_eq!(body(pointer), reference, "{pointer}");
        }
        for pointer in [
            "/paths/~1v1~1sequences/get/responses/200",
            "/paths/~1v1~1reports/get/responses/200",
        ] {
            assert_eq!(
                body(pointer)["properties"]["data"]["items"],
                reference,
                "{pointer}"
            );
        }
    }
}
