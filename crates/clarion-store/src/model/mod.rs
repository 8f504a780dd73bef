//! The store's public data: rows, patches, options and the values callers pass in.
//!
//! Plain, backend-neutral data: nothing here names a database. Each backend maps its rows to
//! these types; the HTTP layer maps them to its JSON.

mod caller_numbers;
mod copy;
mod dashboard;
mod encounters;
mod options;
mod orgs;
mod outbox;
mod privacy;
mod sequences;
mod suppression;

pub use caller_numbers::*;
pub use copy::*;
pub use dashboard::*;
pub use encounters::*;
pub use options::*;
pub use orgs::*;
pub use outbox::*;
pub use privacy::*;
pub use sequences::*;
pub use suppression::*;

#[cfg(test)]
mod tests {
    use clarion_engine::{Channel, SequenceStatus};
    use serde_json::json;

    use super::*;
    use crate::{AssistantId, EncounterId, OrgId, SequenceId, TemplateId, TemplateVersionId};

    const PHONE: &str = "+15555550199";
    const NAME: &str = "Ana Lopez";
    const SAID: &str = "my knee still hurts";

    fn assert_no_phi(debug: &str) {
        for phi in [PHONE, NAME, SAID, "appointment_date"] {
            assert!(!debug.contains(phi), "{phi} in {debug}");
        }
    }

    /// A row printed into a log (`?row`) carries ids, statuses and times, never the number,
    /// the contact, the variables or what was said.
    #[test]
    fn rows_print_without_their_phi() {
        let contact =
            json!({ "phone_number": PHONE, "name": NAME, "time_zone": "Pacific/Honolulu" });
        let variables = json!({ "appointment_date": "January 8" });
        let sequence = SequenceRow {
            id: SequenceId(1),
            org_id: OrgId(2),
            template_id: TemplateId(3),
            template_version_id: TemplateVersionId(4),
            phone_number: PHONE.to_owned(),
            contact: contact.clone(),
            variables: variables.clone(),
            simulation: Some(json!({ "outcomes": [SAID] })),
            status: SequenceStatus::Active,
            state: "{}".to_owned(),
            next_wake_at: Some(5),
            outcome_description: None,
            created_at: 6,
            last_updated: 7,
            ended_at: None,
            phi_purged_at: None,
        };
        let printed = format!("{sequence:?}");
        assert_no_phi(&printed);
        assert!(
            printed.contains("SequenceId(1)") && printed.contains("Active"),
            "{printed}"
        );

        let new = NewSequence {
            org_id: OrgId(2),
            template_id: TemplateId(3),
            template_version_id: TemplateVersionId(4),
            phone_number: PHONE,
            contact: &contact,
            variables: &variables,
            simulation: None,
            status: SequenceStatus::Active,
            state: "{}",
            next_wake_at: None,
            allow_concurrent: false,
            idempotency_key: None,
            idempotency_fingerprint: None,
            now: 8,
        };
        assert_no_phi(&format!("{new:?}"));

        let report = json!({ "transcript": format!("User: {SAID}"), "destination_number": PHONE });
        let encounter = EncounterRow {
            id: EncounterId(9),
            org_id: OrgId(2),
            sequence_id: SequenceId(1),
            step: 0,
            attempt: 1,
            channel: Channel::Sms,
            assistant_id: AssistantId(10),
            phone_number: PHONE.to_owned(),
            status: EncounterStatus::Requested,
            provider_ref: Some("SM1".to_owned()),
            provider_status: None,
            outcome: None,
            report: Some(report.to_string()),
            ends_at: None,
            created_at: 11,
            ended_at: None,
            conversation: Some(json!({ "turns": [SAID], "name": NAME }).to_string()),
            claimed_at: Some(12),
            sender: None,
            caller_number: None,
        };
        let printed = format!("{encounter:?}");
        assert_no_phi(&printed);
        assert!(
            printed.contains("EncounterId(9)") && printed.contains("SM1"),
            "{printed}"
        );

        let requested = RequestedEncounter {
            id: EncounterId(9),
            provider_ref: "sim_9".to_owned(),
            ends_at: Some(13),
            report: Some(report.to_string()),
            outcome: Some("resolved".to_owned()),
        };
        let printed = format!("{requested:?}");
        assert_no_phi(&printed);
        assert!(printed.contains("resolved"), "{printed}");
    }
}
