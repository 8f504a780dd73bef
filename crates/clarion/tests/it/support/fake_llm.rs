//! A local fake of an OpenAI-compatible chat-completions API: `POST /chat/completions` with a
//! Bearer key answers a `chat.completion` whose message content is the scripted text, or a
//! scripted error status. Records the requests.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

pub const API_KEY: &str = "llm-test-key";

/// A scripted answer.
#[derive(Debug, Clone)]
pub enum LlmAnswer {
    /// The assistant message's content.
    Content(String),
    /// An error status.
    Error(u16),
}

#[derive(Default)]
struct Inner {
    answers: VecDeque<LlmAnswer>,
    requests: Vec<Value>,
}

#[derive(Clone)]
pub struct FakeLlm {
    pub url: String,
    inner: Arc<Mutex<Inner>>,
}

impl FakeLlm {
    pub async fn start() -> Self {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let router = Router::new()
            .route("/v1/chat/completions", post(complete))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v1", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        Self { url, inner }
    }

    pub fn settings(&self) -> clarion_providers::llm::LlmSettings {
        clarion_providers::llm::LlmSettings {
            base_url: self.url.clone(),
            api_key: API_KEY.to_owned(),
            model: "test-model".to_owned(),
            timeout: std::time::Duration::from_secs(5),
        }
    }

    pub fn answer_next(&self, answer: LlmAnswer) {
        self.inner.lock().unwrap().answers.push_back(answer);
    }

    pub fn requests(&self) -> Vec<Value> {
        self.inner.lock().unwrap().requests.clone()
    }
}

async fn complete(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    axum::Json(request): axum::Json<Value>,
) -> Response {
    if headers.get("authorization").and_then(|v| v.to_str().ok())
        != Some(&format!("Bearer {API_KEY}"))
    {
        return (StatusCode::UNAUTHORIZED, axum::Json(json!({ "error": { "message": "Incorrect API key provided", "type": "invalid_request_error" } }))).into_response();
    }
    let mut inner = inner.lock().unwrap();
    inner.requests.push(request.clone());
    match inner.answers.pop_front() {
        Some(LlmAnswer::Error(status)) => (
            StatusCode::from_u16(status).unwrap(),
            axum::Json(
                json!({ "error": { "message": "scripted failure", "type": "server_error" } }),
            ),
        )
            .into_response(),
        Some(LlmAnswer::Content(content)) => axum::Json(json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1_736_175_600,
            "model": request["model"],
            "choices": [ { "index": 0, "finish_reason": "stop",
                           "message": { "role": "assistant", "content": content } } ],
            "usage": { "prompt_tokens": 50, "completion_tokens": 12, "total_tokens": 62 },
        }))
        .into_response(),
        None => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}
