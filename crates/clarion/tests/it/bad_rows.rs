//! A bad row never stops a worker loop: a sequence whose stored contact or state no longer
//! reads is parked (paused, with a `parked` event saying why), and every other sequence of
//! the same batch goes on, whether the batch wakes sequences or ends their encounters.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::time::Duration;

use clarion_store::{IdKind, OrgId, SequenceId, SequenceStatus};
use serde_json::{Value, json};

use crate::support::{TestApp, spawn_app};

struct Fixture {
    app: TestApp,
    org: OrgId,
    key: String,
    caller: i64,
}

async fn fixture() -> Fixture {
    let app = spawn_app().await;
    let (org, key) = app.org("Bad rows").await;
    let (status, caller) = app
        .post(
            &key,
            "/v1/assistants",
            json!({ "name": "Caller", "channel": "call" }),
        )
        .await;
    assert_eq!(status, 201, "{caller}");
    Fixture {
        app,
        org,
        key,
        caller: caller["id"].as_i64().unwrap(),
    }
}

impl Fixture {
    /// A template of one call, `delay` after enrollment (`None`: at once).
    async fn template(&self, delay: Option<&str>) -> i64 {
        let mut step = json!({ "type": "call", "assistant_id": self.caller });
        if let Some(delay) = delay {
            step["delay"] = json!(delay);
        }
        let (status, template) = self
            .app
            .post(
                &self.key,
                "/v1/sequence-templates",
                json!({ "name": "One call", "calling_hours": null, "steps": [step] }),
            )
            .await;
        assert_eq!(status, 201, "{template}");
        template["id"].as_i64().unwrap()
    }

    async fn enroll(&self, template: i64, phone: &str) -> i64 {
        self.enroll_scripted(template, phone, "resolved").await
    }

    /// Enrolls `phone` with the simulator's outcome for its call.
    async fn enroll_scripted(&self, template: i64, phone: &str, outcome: &str) -> i64 {
        self.app
            .enroll(
                &self.key,
                json!({
                    "template_id": template,
                    "contact": { "phone_number": phone, "time_zone": "Pacific/Honolulu" },
                    "simulation": { "outcomes": [outcome] }
                }),
            )
            .await
    }

    fn internal(&self, id: i64) -> SequenceId {
        SequenceId(
            self.app
                .store
                .public_ids(self.org)
                .decode(IdKind::Sequence, id)
                .unwrap(),
        )
    }

    /// Overwrites one column of a sequence's row behind the store's back.
    async fn corrupt(&self, id: i64, column: &str, value: &str) {
        let changed = self
            .app
            .database
            .execute_raw(&format!(
                "UPDATE sequences SET {column} = '{value}' WHERE id = {}",
                self.internal(id).0
            ))
            .await
            .unwrap();
        assert_eq!(changed, 1);
    }

    async fn status(&self, id: i64) -> SequenceStatus {
        let row = self.app.store.get_sequence(self.org, self.internal(id));
        row.await.unwrap().unwrap().status
    }

    async fn events(&self, id: i64) -> Vec<Value> {
        self.app.events(&self.key, id).await
    }

    /// The bad sequence is paused with a `parked` event naming what does not read; the good
    /// one ran to its end.
    async fn assert_parked_and_the_other_ended(&self, bad: i64, what: &str, good: i64) {
        assert_eq!(
            (self.status(good).await, self.status(bad).await),
            (SequenceStatus::Ended, SequenceStatus::Paused),
            "good: {:?}; bad: {:?}",
            self.events(good).await,
            self.events(bad).await
        );
        let events = self.events(bad).await;
        let parked = events
            .iter()
            .find(|event| event["type"] == "parked")
            .unwrap_or_else(|| panic!("no parked event: {events:?}"));
        let reason = parked["detail"]["reason"].as_str().unwrap();
        assert!(reason.contains(what), "{reason}");
    }
}

/// Two sequences woken in one batch an hour after enrollment, one of them with `contact`
/// overwritten by `stored`: that one is parked, the other runs to its end.
async fn wake_beside_a_contact_stored_as(stored: &str) {
    let f = fixture().await;
    let template = f.template(Some("1h")).await;
    let bad = f.enroll(template, "+18085550140").await;
    let good = f.enroll(template, "+18085550141").await;
    f.corrupt(bad, "contact", stored).await;

    f.app.clock.advance(Duration::from_secs(3600));
    f.app.run_due().await;
    f.app.clock.advance(Duration::from_secs(3600));
    f.app.run_due().await;
    f.assert_parked_and_the_other_ended(bad, "contact", good)
        .await;
}

/// JSON that is not a contact fails the scheduler's reading of it.
#[tokio::test]
async fn a_sequence_whose_contact_does_not_read_is_parked_and_its_batch_wakes() {
    wake_beside_a_contact_stored_as(r#"{"time_zone": 7}"#).await;
}

/// Text that is not JSON at all fails the store's decoding of the row, before the scheduler
/// sees it: the row decodes as one that cannot run instead of failing the batch's read.
#[tokio::test]
async fn a_sequence_whose_contact_is_not_json_is_parked_and_its_batch_wakes() {
    wake_beside_a_contact_stored_as("not json").await;
}

/// The bad one's call ends in an opt-out: it is parked, and its number suppressed all the
/// same (an opt-out suppresses whatever state its sequence is in).
#[tokio::test]
async fn a_sequence_whose_state_does_not_read_is_parked_when_its_call_ends() {
    let f = fixture().await;
    let template = f.template(None).await;
    // Both calls start in one pass; their ends are due together, in one batch.
    let bad = f.enroll_scripted(template, "+18085550142", "opt-out").await;
    let good = f.enroll(template, "+18085550143").await;
    f.app.run_due().await;
    for id in [bad, good] {
        let started = f.events(id).await;
        assert!(
            started.iter().any(|e| e["type"] == "encounter-started"),
            "{started:?}"
        );
    }
    f.corrupt(bad, "state", "not json").await;

    f.app.clock.advance(Duration::from_secs(3600));
    f.app.run_due().await;
    f.assert_parked_and_the_other_ended(bad, "state", good)
        .await;
    assert_eq!(
        f.app
            .suppression_reason(&f.key, "+18085550142")
            .await
            .as_deref(),
        Some("opt-out")
    );
    assert_eq!(f.app.suppression_reason(&f.key, "+18085550143").await, None);
}

/// The provider worker's claim reads the sequence too: a row that stopped reading between
/// its encounter's commit and its claim is parked there, its encounter withdrawn (nobody is
/// texted), instead of failing every claim pass and holding its sender's queue.
#[tokio::test]
async fn a_sequence_whose_state_does_not_read_is_parked_at_its_claim_and_the_queue_moves() {
    use crate::support::fake_twilio::FakeTwilio;
    use crate::support::{AppOptions, spawn_app_with};
    use crate::twilio::{enroll_in, texting_org};

    let twilio = FakeTwilio::start().await;
    let app = spawn_app_with(AppOptions {
        twilio: Some(twilio.settings()),
        ..AppOptions::default()
    })
    .await;
    let (org, key, template) = texting_org(&app, "Bad rows").await;
    let bad = enroll_in(&app, &key, template, "+15555550180").await;
    let good = enroll_in(&app, &key, template, "+15555550181").await;
    // Both texts are committed for Twilio, queued and not yet claimed.
    app.scheduler.run_due_pass().await.unwrap();
    assert!(twilio.sent().is_empty());
    let f = Fixture {
        app,
        org,
        key,
        caller: 0,
    };
    f.corrupt(bad, "state", "not json").await;

    // The first pass takes the bad one (the oldest) and parks it; the sound one goes out
    // at its sender's next turn (Twilio's pace per sender).
    f.app.scheduler.place_claimable().await.unwrap();
    assert_eq!(f.status(bad).await, SequenceStatus::Paused);
    crate::support::eventually("the sound sequence's text goes out", || async {
        f.app.scheduler.place_claimable().await.unwrap();
        !twilio.sent().is_empty()
    })
    .await;
    let sent: Vec<String> = twilio.sent().iter().map(|m| m.to.clone()).collect();
    assert_eq!(
        sent,
        ["+15555550181"],
        "only the sound sequence's text goes out"
    );
    assert_eq!(f.status(bad).await, SequenceStatus::Paused);
    assert_eq!(f.status(good).await, SequenceStatus::Active);
    let events = f.events(bad).await;
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "parked"
                && e["detail"]["reason"].as_str().unwrap().contains("state")),
        "{events:?}"
    );
    let encounters = f
        .app
        .store
        .sequence_encounters(f.internal(bad))
        .await
        .unwrap();
    assert!(encounters.is_empty(), "the bad one's text was withdrawn");
}

/// A cancel of a sequence whose row does not read fails loudly (a server error, nothing
/// changed) instead of answering as done with the sequence silently paused: an erasure that
/// cancels first must not report PHI erased that is still there.
#[tokio::test]
async fn a_cancel_of_a_sequence_that_does_not_read_fails_instead_of_pretending() {
    let f = fixture().await;
    let template = f.template(Some("1h")).await;
    let bad = f.enroll(template, "+18085550148").await;
    f.corrupt(bad, "state", "not json").await;

    let (status, error) = f
        .app
        .post(&f.key, &format!("/v1/sequences/{bad}/cancel"), json!({}))
        .await;
    assert_eq!(status, 500, "{error}");
    assert_eq!(error["error"]["code"], "internal", "{error}");
    assert_eq!(f.status(bad).await, SequenceStatus::Active);
    assert!(
        !f.events(bad).await.iter().any(|e| e["type"] == "parked"),
        "not parked by the failed cancel"
    );
}

/// A sequence cancelled while its call was in progress has ended; when that call's end
/// comes and the row no longer reads, the late end changes nothing: the sequence stays
/// ended, not brought back as paused.
#[tokio::test]
async fn a_late_end_for_an_ended_sequence_that_does_not_read_leaves_it_ended() {
    let f = fixture().await;
    let template = f.template(None).await;
    let id = f.enroll(template, "+18085550149").await;
    f.app.run_due().await;
    let (status, cancelled) = f
        .app
        .post(&f.key, &format!("/v1/sequences/{id}/cancel"), json!({}))
        .await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(f.status(id).await, SequenceStatus::Ended);
    f.corrupt(id, "state", "not json").await;

    f.app.clock.advance(Duration::from_secs(3600));
    f.app.run_due().await;
    assert_eq!(f.status(id).await, SequenceStatus::Ended);
    let row = f.app.store.get_sequence(f.org, f.internal(id)).await;
    assert!(row.unwrap().unwrap().ended_at.is_some());
}
