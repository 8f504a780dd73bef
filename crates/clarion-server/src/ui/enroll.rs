//! Enrollment from a CSV upload (`POST /ui/templates/enroll`, the form on the Templates
//! page): a `multipart/form-data` form with the file, the template and the CSRF token.
//!
//! The file is read exactly as `clarion enroll` reads it ([`crate::enroll_csv`]: the same
//! columns, items and per-row errors) and its rows are enrolled through the path of `POST
//! /v1/sequences/batch` ([`crate::routes::sequences::enroll_items`]: validation, the
//! rendering check, suppression, the session's organisation). Each row carries an
//! `Idempotency-Key` made of the template, the file's SHA-256 and the row's line, so sending
//! the same file again (a resubmitted form) enrolls nobody twice. Bounds: the API's body
//! limit ([`crate::limits::MAX_BODY_BYTES`]) for the whole form, and a batch's
//! [`MAX_BATCH`] rows. The result page lists what was enrolled and each rejected row with
//! its line and reason; the server's log gets counts only.

use std::pin::Pin;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::Response;
use clarion_scheduler::Enrolled;
use clarion_store::{IdKind, TemplateId};
use maud::html;
use sha2::{Digest, Sha256};

use super::page::{Nav, UiError, internal_id, layout, respond};
use super::session::Viewer;
use crate::AppState;
use crate::enroll_csv::{self, Columns, Row};
use crate::limits::MAX_BODY_BYTES;
use crate::routes::sequences::{BatchItem, MAX_BATCH, enroll_items};

/// One rejected row, as the result page shows it.
struct Rejection {
    line: u64,
    code: String,
    field: Option<String>,
    message: String,
}

/// `POST /ui/templates/enroll`.
pub async fn upload(
    State(state): State<AppState>,
    viewer: Viewer,
    request: Request,
) -> Result<Response, UiError> {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = read_body(request.into_body()).await?;
    let form = multipart::parse(&content_type, &body)
        .ok_or_else(|| UiError::bad_request("The form could not be read."))?;
    viewer.check_csrf(form.text("csrf_token"))?;
    let ids = state.store.public_ids(viewer.org);
    let template_public = form.text("template").unwrap_or_default().trim().to_owned();
    let template = TemplateId(internal_id(
        &ids,
        IdKind::Template,
        &template_public,
        "template",
    )?);
    let version = state
        .store
        .get_template(viewer.org, template)
        .await?
        .ok_or_else(|| UiError::not_found("template"))?;
    let file = form
        .file("file")
        .filter(|file| !file.is_empty())
        .ok_or_else(|| UiError::bad_request("Choose a CSV file to enroll."))?;

    let mut reader = enroll_csv::reader(file);
    let columns = Columns::read(&mut reader).map_err(|error| {
        UiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("The file cannot be enrolled: {error}."),
        )
    })?;
    let digest: String = Sha256::digest(file)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut record = csv::ByteRecord::new();
    let mut rejected = Vec::new();
    let mut items = Vec::new();
    let mut lines = Vec::new();
    let mut rows = 0_usize;
    while let Some(row) = columns.next_row(&mut reader, &mut record).map_err(|_| {
        UiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "The file is not CSV from line {} on.",
                reader.position().line()
            ),
        )
    })? {
        rows += 1;
        if rows > MAX_BATCH {
            return Err(UiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "The file has more than {MAX_BATCH} rows. Split it, or enroll it with \
                     clarion enroll."
                ),
            ));
        }
        match row {
            Row::Item { line, json } => match serde_json::from_str::<BatchItem>(&json) {
                Ok(item) => {
                    let key = format!("csv-upload:{template_public}:{digest}:{line}");
                    items.push((item, Some(key)));
                    lines.push(line);
                }
                Err(_) => rejected.push(Rejection {
                    line,
                    code: "invalid_csv".into(),
                    field: None,
                    message: "the row could not be read".into(),
                }),
            },
            Row::Rejected { line, message } => rejected.push(Rejection {
                line,
                code: "invalid_csv".into(),
                field: None,
                message,
            }),
        }
    }
    let (mut created, mut existing) = (0_u64, 0_u64);
    if !items.is_empty() {
        let outcomes = enroll_items(&state, viewer.org, template, items).await?;
        for (line, outcome) in lines.into_iter().zip(outcomes) {
            match outcome {
                Ok(Enrolled::Created(_)) => created += 1,
                Ok(Enrolled::Existing(_)) => existing += 1,
                Err(error) => rejected.push(Rejection {
                    line,
                    code: error.code.to_owned(),
                    field: error
                        .field
                        .as_deref()
                        .map(|f| enroll_csv::item_field(f).to_owned()),
                    message: error.message,
                }),
            }
        }
    }
    rejected.sort_by_key(|r| r.line);
    tracing::info!(
        org_id = viewer.org.0,
        rows,
        enrolled = created,
        already_enrolled = existing,
        rejected = rejected.len(),
        "dashboard CSV enrollment"
    );
    let body = html! {
        h1 { "Enrollment from a CSV file" }
        p { "Template: " strong { (version.name) } " (version " (version.version) ")." }
        dl.facts.result {
            dt { "Rows read" } dd data-rows=(rows) { (rows) }
            dt { "Enrolled" } dd data-enrolled=(created) { (created) }
            @if existing > 0 {
                dt { "Already enrolled" }
                dd data-existing=(existing) { (existing) " (by an earlier upload of this same file)" }
            }
            dt { "Rejected" } dd data-rejected=(rejected.len()) { (rejected.len()) }
        }
        @if rejected.is_empty() {
            p { "Every row was accepted." }
        } @else {
            p { "Correct these rows and upload them again (the rows already enrolled are not \
                 enrolled twice if you send the whole file again)." }
            div.scroll {
                table.rejected {
                    caption { "Rejected rows" }
                    thead { tr {
                        th scope="col" { "Line" }
                        th scope="col" { "Error" }
                        th scope="col" { "Column" }
                        th scope="col" { "Reason" }
                    } }
                    tbody {
                        @for row in &rejected {
                            tr data-line=(row.line) {
                                td.num { (row.line) }
                                td { code { (row.code) } }
                                td { (row.field.as_deref().unwrap_or("—")) }
                                td { (row.message) }
                            }
                        }
                    }
                }
            }
        }
        p {
            a href="/ui/sequences" { "See the sequences" } " · "
            a href="/ui/templates" { "Enroll another file" }
        }
    };
    Ok(respond(
        StatusCode::OK,
        layout(
            "Enrollment from a CSV file",
            Some(viewer.frame(Nav::Templates)),
            body,
        ),
    ))
}

/// The request's body, at most [`MAX_BODY_BYTES`] (413 beyond).
async fn read_body(mut body: axum::body::Body) -> Result<Vec<u8>, UiError> {
    use http_body::Body as _;
    let too_large = || {
        UiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "The upload is larger than 2 MiB. Split the file, or enroll it with clarion enroll.",
        )
    };
    let mut bytes = Vec::new();
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let frame = frame.map_err(|_| UiError::bad_request("The upload could not be read."))?;
        if let Ok(data) = frame.into_data() {
            if bytes.len() + data.len() > MAX_BODY_BYTES {
                return Err(too_large());
            }
            bytes.extend_from_slice(&data);
        }
    }
    Ok(bytes)
}

/// A strict reader of `multipart/form-data` bodies (RFC 7578) as browsers send them: the
/// whole body in memory (bounded by the caller), parts found by their boundary, each part's
/// `Content-Disposition` name (and file name) read; anything malformed is `None`.
mod multipart {
    /// Most parts a form of this dashboard sends (three), with room.
    const MAX_PARTS: usize = 16;

    /// One part: its field name, whether it was a file, and its bytes.
    #[derive(Debug, PartialEq, Eq)]
    pub struct Part<'a> {
        pub name: String,
        pub is_file: bool,
        pub content: &'a [u8],
    }

    #[derive(Debug)]
    pub struct Form<'a>(Vec<Part<'a>>);

    impl<'a> Form<'a> {
        /// A text field's value (the first of that name), when it is UTF-8.
        pub fn text(&self, name: &str) -> Option<&'a str> {
            self.0
                .iter()
                .find(|p| p.name == name && !p.is_file)
                .and_then(|p| std::str::from_utf8(p.content).ok())
        }

        /// A file field's bytes.
        pub fn file(&self, name: &str) -> Option<&'a [u8]> {
            self.0
                .iter()
                .find(|p| p.name == name && p.is_file)
                .map(|p| p.content)
        }
    }

    fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
        haystack.windows(needle.len()).position(|w| w == needle)
    }

    /// `key=value` parameters after the first `;` of a header value; a quoted value may hold
    /// `;` and `\"`.
    fn params(value: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut chars = value.chars().peekable();
        // Skip the media type or disposition itself.
        for c in chars.by_ref() {
            if c == ';' {
                break;
            }
        }
        loop {
            while chars.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
                chars.next();
            }
            let mut key = String::new();
            while let Some(&c) = chars.peek() {
                if c == '=' || c == ';' {
                    break;
                }
                key.push(c);
                chars.next();
            }
            if key.is_empty() && chars.peek().is_none() {
                return out;
            }
            let mut val = String::new();
            if chars.peek() == Some(&'=') {
                chars.next();
                if chars.peek() == Some(&'"') {
                    chars.next();
                    while let Some(c) = chars.next() {
                        match c {
                            '\\' => {
                                if let Some(escaped) = chars.next() {
                                    val.push(escaped);
                                }
                            }
                            '"' => break,
                            c => val.push(c),
                        }
                    }
                }
                while let Some(&c) = chars.peek() {
                    if c == ';' {
                        break;
                    }
                    val.push(c);
                    chars.next();
                }
            }
            out.push((key.trim().to_ascii_lowercase(), val.trim().to_owned()));
            if chars.next().is_none() {
                return out;
            }
        }
    }

    /// The parts of `body`, sent with `content_type` (which names the boundary).
    pub fn parse<'a>(content_type: &str, body: &'a [u8]) -> Option<Form<'a>> {
        let media = content_type.split(';').next()?.trim();
        if !media.eq_ignore_ascii_case("multipart/form-data") {
            return None;
        }
        let boundary = params(content_type)
            .into_iter()
            .find(|(k, _)| k == "boundary")
            .map(|(_, v)| v)
            .filter(|b| (1..=70).contains(&b.len()))?;
        let delimiter = format!("--{boundary}");
        let next_delimiter = format!("\r\n--{boundary}");
        let mut rest = &body[find(body, delimiter.as_bytes())? + delimiter.len()..];
        let mut parts = Vec::new();
        loop {
            if rest.starts_with(b"--") {
                return Some(Form(parts));
            }
            if parts.len() == MAX_PARTS {
                return None;
            }
            rest = rest.strip_prefix(b"\r\n")?;
            let head_end = find(rest, b"\r\n\r\n")?;
            let head = std::str::from_utf8(&rest[..head_end]).ok()?;
            let after = &rest[head_end + 4..];
            let end = find(after, next_delimiter.as_bytes())?;
            let disposition = head.split("\r\n").find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.trim()
                    .eq_ignore_ascii_case("content-disposition")
                    .then(|| value.trim())
            })?;
            let params = params(disposition);
            let name = params.iter().find(|(k, _)| k == "name")?.1.clone();
            let is_file = params.iter().any(|(k, _)| k == "filename");
            parts.push(Part {
                name,
                is_file,
                content: &after[..end],
            });
            rest = &after[end + next_delimiter.len()..];
        }
    }

    #[cfg(test)]
    #[allow(clippy::unwrap_used)]
    mod tests {
        use super::*;

        const BODY: &[u8] = b"--XyZ\r\n\
            Content-Disposition: form-data; name=\"csrf_token\"\r\n\r\n\
            tok\r\n\
            --XyZ\r\n\
            Content-Disposition: form-data; name=\"file\"; filename=\"a;b \\\"c\\\".csv\"\r\n\
            Content-Type: text/csv\r\n\r\n\
            phone_number,time_zone\r\n+15555550123,UTC\r\n\r\n\
            --XyZ--\r\n";

        #[test]
        fn a_browsers_form_is_read_field_by_field() {
            let form = parse("multipart/form-data; boundary=XyZ", BODY).unwrap();
            assert_eq!(form.text("csrf_token"), Some("tok"));
            assert_eq!(
                form.file("file"),
                Some(&b"phone_number,time_zone\r\n+15555550123,UTC\r\n"[..])
            );
            assert_eq!(form.text("file"), None, "a file is not a text field");
            assert_eq!(form.file("csrf_token"), None);
            // A quoted boundary.
            assert!(parse("multipart/form-data; boundary=\"XyZ\"", BODY).is_some());
        }

        #[test]
        fn malformed_bodies_are_refused_not_panicked_on() {
            assert!(parse("application/x-www-form-urlencoded", BODY).is_none());
            assert!(parse("multipart/form-data", BODY).is_none());
            assert!(parse("multipart/form-data; boundary=Other", BODY).is_none());
            for cut in 0..BODY.len() - 4 {
                let _ = parse("multipart/form-data; boundary=XyZ", &BODY[..cut]);
            }
            assert!(parse("multipart/form-data; boundary=XyZ", &BODY[..BODY.len() - 9]).is_none());
        }
    }
}
