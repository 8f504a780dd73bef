//! Request extractors that fail with [`ApiError`]s: the API key, JSON bodies with the path of
//! the offending field, and query strings.

use crate::strict_json::StrictValue;
use axum::extract::{FromRef, FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::request::Parts;
use clarion_store::OrgId;
use serde::de::DeserializeOwned;

use crate::AppState;
use crate::error::ApiError;

/// The organisation of the request's API key. Every tenant-scoped handler takes one, and
/// every query it runs is filtered by it.
#[derive(Debug, Clone, Copy)]
pub struct Org(pub OrgId);

impl<S> FromRequestParts<S> for Org
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let state = AppState::from_ref(state);
        let key = bearer_key(parts).ok_or_else(ApiError::unauthorized)?;
        match state.store.authenticate(key).await? {
            Some(org) => Ok(Org(org)),
            None => Err(ApiError::unauthorized()),
        }
    }
}

/// The organisation of the request's API key and the key's id: for handlers whose changes are
/// recorded with their author (`api-key:<id>`).
#[derive(Debug, Clone, Copy)]
pub struct OrgCaller {
    pub org: OrgId,
    pub api_key_id: clarion_store::ApiKeyId,
}

impl OrgCaller {
    /// How the change's author is recorded.
    pub fn actor(&self) -> String {
        format!("api-key:{}", self.api_key_id)
    }
}

impl<S> FromRequestParts<S> for OrgCaller
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let state = AppState::from_ref(state);
        let key = bearer_key(parts).ok_or_else(ApiError::unauthorized)?;
        match state.store.authenticate_key(key).await? {
            Some(key) => Ok(OrgCaller {
                org: key.org_id,
                api_key_id: key.key_id,
            }),
            None => Err(ApiError::unauthorized()),
        }
    }
}

/// The key of an `Authorization: Bearer <key>` header. The scheme is case-insensitive (RFC
/// 9110 §11.1), so `bearer` and `BEARER` work too.
fn bearer_key(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, key) = value.split_once(' ')?;
    let key = key.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !key.is_empty()).then_some(key)
}

/// Whether a `Content-Type` names JSON: the media type itself (before any parameter such as
/// `charset`) must be `application/json`, in any case; `application/jsonx` is not JSON.
fn is_json_media_type(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
}

/// A JSON body. Syntax errors are 400 `invalid_json`; a body that does not fit the schema is
/// 422 `invalid_field` with the JSON path of the field at fault.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let is_json = request
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(is_json_media_type);
        if !is_json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as application/json",
            ));
        }
        let bytes = axum::body::Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "payload_too_large",
                        "the request body is larger than the 2 MiB allowed",
                    )
                } else {
                    ApiError::bad_request("invalid_body", "the request body could not be read")
                }
            })?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// Parses JSON, naming the field at fault. Messages carry paths and expectations, never the
/// submitted values (which may be PHI).
///
/// Every request body is a JSON object: serde would also accept an array for a struct (its
/// fields by position: `[null, null]` for `{"a": null, "b": null}`), so anything else at the
/// top level is refused before it is read, and nested objects are read through
/// [`StrictValue`], which refuses an array there too. Nothing may follow the value but
/// whitespace.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first.is_some_and(|b| *b != b'{')
        && serde_json::from_slice::<serde_json::Value>(bytes).is_ok()
    {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            "the body must be a JSON object",
        ));
    }
    // Syntax first (with its position), and nothing after the value...
    let deserializer = &mut serde_json::Deserializer::from_slice(bytes);
    let parsed = serde::Deserialize::deserialize(&mut *deserializer).map_err(
        |error: serde_json::Error| {
            ApiError::bad_request(
                "invalid_json",
                format!(
                    "the body is not valid JSON (line {}, column {})",
                    error.line(),
                    error.column()
                ),
            )
        },
    )?;
    deserializer.end().map_err(|_| {
        ApiError::bad_request(
            "invalid_json",
            "the body has more after its JSON value (one JSON object per request)",
        )
    })?;
    let parsed: serde_json::Value = parsed;
    // ...then the types, strictly: no array where an object belongs, at any depth.
    let value = serde_path_to_error::deserialize(StrictValue(&parsed)).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        let message = describe_data_error(&inner.to_string());
        let field = if path == "." { None } else { Some(path) };
        let mut error = ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", message);
        if let Some(field) = field {
            error = error.with_field(field);
        } else if let Some(missing) = missing_field_name(&inner.to_string()) {
            error = error.with_field(missing);
        }
        error
    })?;
    Ok(value)
}

/// serde's data errors, minus the position suffix and any quoted input value.
fn describe_data_error(text: &str) -> String {
    let text = text.split(" at line ").next().unwrap_or(text);
    // "invalid type: string \"...\", expected ..." quotes the value; keep only the kinds.
    if let Some(rest) = text.strip_prefix("invalid type: ")
        && let Some((found, expected)) = rest.split_once(", expected ")
    {
        let kind = found.split_whitespace().next().unwrap_or("value");
        return format!("invalid type: {kind}, expected {expected}");
    }
    if let Some(rest) = text.strip_prefix("invalid value: ")
        && let Some((_, expected)) = rest.split_once(", expected ")
    {
        return format!("invalid value, expected {expected}");
    }
    if let Some(rest) = text.strip_prefix("unknown variant ")
        && let Some((_, expected)) = rest.split_once(", expected ")
    {
        return format!("unknown value, expected {expected}");
    }
    text.to_owned()
}

fn missing_field_name(text: &str) -> Option<String> {
    let rest = text.strip_prefix("missing field `")?;
    Some(rest.split('`').next()?.to_owned())
}

/// Query-string parameters, with 422 `invalid_field` naming the parameter.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        let deserializer =
            serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(deserializer)
            .map(ApiQuery)
            .map_err(|error| {
                let path = error.path().to_string();
                let message = describe_data_error(&error.into_inner().to_string());
                ApiError::invalid(if path == "." { "query" } else { &path }, message)
            })
    }
}

/// The integer id in a `/{id}` path. A non-integer id cannot name anything: 404.
#[derive(Debug, Clone, Copy)]
pub struct IdPath(pub i64);

impl<S: Send + Sync> FromRequestParts<S> for IdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<i64>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(id)| IdPath(id))
            .map_err(|_| ApiError::not_found("resource"))
    }
}
