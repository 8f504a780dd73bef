//! The `clarion` crate's integration tests, in one binary so that the shared support
//! (`support/`: the in-process app, the test receiver, the Vapi, Twilio and LLM fakes)
//! compiles and links once. Each module is one area; the real binary is driven where a test
//! says so (`CARGO_BIN_EXE_clarion`).

mod support;

mod api;
mod api_path;
mod bad_rows;
mod caller_numbers;
mod capacity;
mod chaos;
mod cli_config;
mod cli_webhook;
mod crash;
mod delivery;
mod eligibility;
mod endpoint_recovery;
mod endpoint_stats;
mod enroll;
mod fairness;
mod hostile;
mod hostile_receivers;
mod ids;
mod input_limits;
mod logs;
mod migrate_store;
mod outage;
mod postgres_nodes;
mod privacy;
mod process;
mod sequences;
mod tidy;
mod twilio;
mod ui;
mod ui_browser;
mod vapi;
mod voicemail_text;
mod webhook_events;
