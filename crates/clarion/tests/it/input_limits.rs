//! Memory amplification (issue 14, defect 2): every free-form field is bounded in size, depth
//! and entries with a 422 naming the field (never echoing its value), and list pages are
//! bounded by bytes as well as rows, with a cursor that still walks the whole list.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::collections::HashSet;

use serde_json::{Value, json};

use crate::support::spawn_app;

/// `{"k": {"k": ... 1 ...}}`, `depth` objects deep.
fn nested(depth: usize) -> Value {
    (0..depth).fold(json!(1), |inner, _| json!({ "k": inner }))
}

#[tokio::test]
async fn an_oversized_or_over_deep_free_form_field_is_refused_naming_the_field() {
    let app = spawn_app().await;
    let (_org, key) = app.org("Riverside").await;
    let (status, template_assistant) = app
        .post(
            &key,
            "/v1/assistants",
            json!({ "name": "Caller", "channel": "call", "config": {} }),
        )
        .await;
    assert_eq!(status, 201, "{template_assistant}");
    let (status, template) = app
        .post(
            &key,
            "/v1/sequence-templates",
            json!({ "name": "Call", "calling_hours": null,
                "steps": [ { "type": "call", "assistant_id": template_assistant["id"] } ] }),
        )
        .await;
    assert_eq!(status, 201, "{template}");
    let many_keys: serde_json::Map<String, Value> =
        (0..5_000).map(|i| (format!("k{i}"), json!(0))).collect();
    let enroll = |variables: Value| {
        json!({ "template_id": template["id"], "variables": variables,
            "contact": { "phone_number": "+15555550123", "time_zone": "America/New_York" } })
    };
    let cases: Vec<(&str, Value, &str, &str)> = vec![
        (
            "/v1/assistants",
            json!({ "name": "Deep", "channel": "call", "config": nested(40) }),
            "config",
            "nested more than 16",
        ),
        (
            "/v1/assistants",
            json!({ "name": "Wide", "channel": "call", "config": many_keys }),
            "config",
            "more than 4096 keys",
        ),
        (
            "/v1/assistants",
            json!({ "name": "Described", "channel": "call", "config": {},
                "custom_fields": [ { "name": "f", "type": "string", "description": "d".repeat(5_000) } ] }),
            "custom_fields[0].description",
            "at most 1000 characters",
        ),
        (
            "/v1/assistants",
            json!({ "name": "Enum", "channel": "call", "config": {},
                "custom_fields": [ { "name": "f", "type": "enum", "values": vec!["v"; 1_000] } ] }),
            "custom_fields[0].values",
            "at most 100 values",
        ),
        (
            "/v1/webhook-endpoints",
            json!({ "url": "http://127.0.0.1:9/hook", "description": "d".repeat(5_000) }),
            "description",
            "at most 1000 characters",
        ),
        (
            "/v1/suppressions",
            json!({ "phone_number": "+15555550199", "reason": "r".repeat(5_000) }),
            "reason",
            "at most 200 characters",
        ),
        (
            "/v1/sequences",
            enroll(json!({ "deep": nested(12) })),
            "variables",
            "nested more than 8",
        ),
    ];
    for (path, body, field, problem) in cases {
        let (status, error) = app.post(&key, path, body).await;
        assert_eq!(status, 422, "{path} {field}: {error}");
        assert_eq!(error["error"]["code"], "invalid_field", "{error}");
        assert_eq!(error["error"]["field"], field, "{error}");
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.contains(problem), "{field}: {message}");
        let text = error.to_string();
        assert!(
            !text.contains("ddddd") && !text.contains("rrrrr") && !text.contains("\"k\""),
            "no value is echoed: {text}"
        );
    }
    // Nothing of the refused requests was stored.
    let (_, assistants) = app.get(&key, "/v1/assistants").await;
    assert_eq!(assistants["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_list_of_large_assistants_is_paged_under_the_byte_bound_and_its_cursor_walks_them_all() {
    let app = spawn_app().await;
    let (_org, key) = app.org("Riverside").await;
    const ASSISTANTS: usize = 40;
    // Just under the 64 KiB config bound: 40 of them are about 2.4 MB.
    let notes = "n".repeat(60_000);
    let mut created = HashSet::new();
    for i in 0..ASSISTANTS {
        let (status, assistant) = app
            .post(
                &key,
                "/v1/assistants",
                json!({ "name": format!("Caller {i}"), "channel": "call", "config": { "notes": notes } }),
            )
            .await;
        assert_eq!(status, 201);
        created.insert(assistant["id"].as_i64().unwrap());
    }

    // The server's page bound (`MAX_PAGE_BYTES`, 1 MiB; README, *Size limits*).
    let bound = 1024 * 1024;
    let mut seen = Vec::new();
    let mut after = String::new();
    let mut pages = 0;
    loop {
        let response = app
            .http
            .get(format!(
                "{}/v1/assistants?limit=200&after={after}",
                app.base
            ))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let bytes = response.bytes().await.unwrap();
        let page: Value = serde_json::from_slice(&bytes).unwrap();
        let data = page["data"].as_array().unwrap();
        assert!(!data.is_empty());
        // At most the bound plus the one item that reached it.
        assert!(
            bytes.len() <= bound + 64 * 1024 + 1024,
            "a page of {} bytes ({} items)",
            bytes.len(),
            data.len()
        );
        seen.extend(data.iter().map(|a| a["id"].as_i64().unwrap()));
        pages += 1;
        match page["next_cursor"].as_str() {
            Some(cursor) => after = cursor.to_owned(),
            None => break,
        }
        assert!(pages <= ASSISTANTS, "the cursor does not advance");
    }
    assert!(pages >= 3, "a 2.4 MB list takes several pages, not {pages}");
    assert_eq!(seen.len(), ASSISTANTS, "each assistant once");
    assert_eq!(seen.iter().copied().collect::<HashSet<_>>(), created);
}
