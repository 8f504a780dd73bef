//! What counts as PHI in the stored rows, and how a purge rewrites a row without it: the one
//! list both backends apply ([`crate::Store::purge_phi`]).
//!
//! Purged: the contact's name and external id, the enrollment's variables, every encounter's
//! report object (transcript, summary, analysis) and conversation state, and in every stored
//! message body of the sequence (its report, events about its encounters) the transcripts,
//! summaries, analysis values and voicemail messages; and the eligibility hook's reasons in
//! the sequence's history (they may name the patient's circumstances). Kept: ids, statuses, times, outcomes,
//! ended reasons, durations, the numbers (the contact's number is what an opt-out, the
//! suppression list and contact caps are matched by; see README, "Privacy").

use serde_json::Value;

/// Keys of a stored contact (the enrollment's `contact` object) that hold PHI.
const CONTACT_KEYS: &[&str] = &["name", "external_id"];

/// Keys of a report, and of any event about an encounter, that hold PHI, wherever they
/// appear (the Call and Sms objects of the report and of `encounter.ended` events).
const BODY_KEYS: &[&str] = &[
    "transcript",
    "summary",
    "analysis",
    "voicemail_message",
    "name",
    "external_id",
    "variables",
];

/// A stored contact (JSON text) without its PHI: those keys set to `null`, the rest (number,
/// zone, state) kept. Text that is not a JSON object becomes `{}`.
pub(crate) fn redact_contact(contact: &str) -> String {
    match serde_json::from_str::<Value>(contact) {
        Ok(Value::Object(mut object)) => {
            for key in CONTACT_KEYS {
                if let Some(value) = object.get_mut(*key) {
                    *value = Value::Null;
                }
            }
            Value::Object(object).to_string()
        }
        _ => "{}".to_owned(),
    }
}

/// A stored message body without PHI: every [`BODY_KEYS`] key, at any depth, set to `null`,
/// the rest kept in order (a report stays a valid report: those keys are nullable). A body
/// that is not JSON becomes `{}`.
pub(crate) fn redact_body(body: &[u8]) -> Vec<u8> {
    match serde_json::from_slice::<Value>(body) {
        Ok(mut value) => {
            null_keys(&mut value);
            value.to_string().into_bytes()
        }
        Err(_) => b"{}".to_vec(),
    }
}

fn null_keys(value: &mut Value) {
    match value {
        Value::Object(object) => {
            for (key, inner) in object.iter_mut() {
                if BODY_KEYS.contains(&key.as_str()) {
                    *inner = Value::Null;
                } else {
                    null_keys(inner);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(null_keys),
        _ => {}
    }
}

/// The history key that holds an eligibility hook's reason (a `skipped` entry's).
const EVENT_KEY: &str = "hook_reason";

/// The kind of history entry that may hold [`EVENT_KEY`].
pub(crate) const EVENT_KIND_WITH_PHI: &str = "skipped";

/// A history entry's detail (JSON text) without the hook's reason, the rest kept in order;
/// `None` when there is none to remove (the row stays as it is).
pub(crate) fn redact_event(detail: &str) -> Option<String> {
    match serde_json::from_str::<Value>(detail) {
        Ok(Value::Object(mut object)) => object
            .shift_remove(EVENT_KEY)
            .map(|_| Value::Object(object).to_string()),
        _ => None,
    }
}

/// What a purge writes in place of the enrollment's variables.
pub(crate) const PURGED_VARIABLES: &str = "{}";

/// Days to milliseconds, for the retention period.
pub(crate) const DAY_MILLIS: i64 = 86_400_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_contact_keeps_its_number_zone_and_state() {
        let contact = r#"{"phone_number":"+15555550100","time_zone":"America/New_York","name":"Ann","external_id":"mrn-1","state":"FL"}"#;
        assert_eq!(
            redact_contact(contact),
            r#"{"phone_number":"+15555550100","time_zone":"America/New_York","name":null,"external_id":null,"state":"FL"}"#
        );
    }

    #[test]
    fn a_report_keeps_its_shape_and_outcomes() {
        let body = br#"{"id":1,"status":"ended","outreach":[{"type":"call","step":1,"call":{"id":2,"transcript":"AI: hi","summary":"s","analysis":{"custom":{"dob":"x"}},"outcome":"resolved","voicemail_message":"v"},"sms":null}]}"#;
        assert_eq!(
            String::from_utf8(redact_body(body)).unwrap(),
            r#"{"id":1,"status":"ended","outreach":[{"type":"call","step":1,"call":{"id":2,"transcript":null,"summary":null,"analysis":null,"outcome":"resolved","voicemail_message":null},"sms":null}]}"#
        );
        assert_eq!(redact_body(b"not json"), b"{}");
    }
}
