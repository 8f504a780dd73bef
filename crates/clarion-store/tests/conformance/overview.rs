//! `Store::overview` (the dashboard's aggregates) and the batched report reads
//! (`report_bodies`, `encounters_of_sequences`): one organisation, one window, nothing of
//! another organisation or of before the window. Each check builds the same data on the
//! suite's backend and on a SQLite file beside it and compares the two answers, then the
//! answer with the numbers the data makes.

use clarion_store::{
    AnsweredSlot, AttemptOutcome, Channel, DeliveryDay, EncounterStatus, MILLIS_PER_DAY, Millis,
    NewMessage, OrgId, OutcomeCount, Overview, OverviewQuery, Recipients, SequenceId, SequenceRow,
    SequenceStatus, SequenceUpdate, Store,
};
use serde_json::json;

use crate::{
    Tenant, attempt_outcome, backend, claim_ten_first_attempts, encounter_of, ended, endpoint,
    new_sequence, queue_deliveries, sqlite_backend, tenant,
};

const DAY: Millis = MILLIS_PER_DAY;
const HOUR: Millis = 3_600_000;
const MINUTE: Millis = 60_000;

/// Enrolls `phone` in `zone` (committed).
async fn enroll_in(store: &Store, tenant: &Tenant, phone: &str, zone: &str) -> SequenceRow {
    let contact = json!({ "phone_number": phone, "time_zone": zone });
    let mut tx = store.begin().await.unwrap();
    let row = store
        .insert_sequence(&mut tx, &new_sequence(tenant, phone, &contact, None))
        .await
        .unwrap()
        .expect("enrolled");
    tx.commit().await.unwrap();
    row
}

async fn update(store: &Store, id: SequenceId, update: SequenceUpdate<'_>) {
    let mut tx = store.begin().await.unwrap();
    store
        .update_sequences(&mut tx, &[(id, update)])
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

/// One encounter of `sequence`: created at `created`, claimed at `claimed` when given, ended
/// at `ended` with `outcome` when given.
#[allow(clippy::too_many_arguments)]
async fn encounter(
    store: &Store,
    tenant: &Tenant,
    sequence: &SequenceRow,
    attempt: i64,
    channel: Channel,
    created: Millis,
    claimed: Option<Millis>,
    end: Option<(Millis, &str)>,
) {
    let mut row = encounter_of(tenant, sequence, attempt, created);
    row.channel = channel;
    let id = crate::insert_encounter(store, &row).await;
    let mut tx = store.begin().await.unwrap();
    if let Some(at) = claimed {
        assert!(store.claim_encounter(&mut tx, id, at).await.unwrap());
    }
    if let Some((at, outcome)) = end {
        assert!(
            store
                .end_encounter(&mut tx, id, outcome, None, at)
                .await
                .unwrap()
        );
    }
    tx.commit().await.unwrap();
}

/// Delivery attempts to a new endpoint of `org`: (attempted at, status, duration).
async fn attempts(store: &Store, org: OrgId, script: &[(Millis, Option<u16>, u64)]) {
    let target = endpoint(store, org, "https://receiver.example/hooks").await;
    queue_deliveries(store, org, target.id, script.len(), 1_000).await;
    let claims = claim_ten_first_attempts(store, 1_000, 1_000 + 40 * DAY).await;
    assert_eq!(claims.len(), script.len());
    let outcomes: Vec<AttemptOutcome> = claims
        .iter()
        .zip(script)
        .map(|(claim, &(at, status, duration_ms))| attempt_outcome(claim, at, status, duration_ms))
        .collect();
    store.record_outcomes(&outcomes, 2_000).await.unwrap();
}

/// The window the checks ask about: days 10 to 39 (UTC).
fn window(org: OrgId, max_slots: u32) -> OverviewQuery {
    OverviewQuery {
        org_id: org,
        since: 10 * DAY,
        until: 40 * DAY,
        max_slots,
    }
}

/// The scenario, on one store: answers the organisation it is about and its neighbour.
async fn scenario(store: &Store) -> (OrgId, OrgId) {
    let acme = tenant(store, "Acme").await;
    let other = tenant(store, "Other").await;
    // Sequences: running, paused, ended in the window, ended before it.
    let honolulu = enroll_in(store, &acme, "+15550100001", "Pacific/Honolulu").await;
    let new_york = enroll_in(store, &acme, "+15550100002", "America/New_York").await;
    let kolkata = enroll_in(store, &acme, "+15550100003", "Asia/Kolkata").await;
    let old = enroll_in(store, &acme, "+15550100004", "Europe/London").await;
    update(
        store,
        new_york.id,
        SequenceUpdate {
            status: SequenceStatus::Paused,
            state: "{}",
            next_wake_at: None,
            outcome_description: None,
            now: 11 * DAY,
        },
    )
    .await;
    update(store, kolkata.id, ended(12 * DAY)).await;
    update(store, old.id, ended(5 * DAY)).await;

    // Day 20, 19:05 and 19:20 UTC (09:05 and 09:20 in Honolulu): answered calls.
    let day20 = 20 * DAY;
    let (at_1905, at_1920) = (
        day20 + 19 * HOUR + 5 * MINUTE,
        day20 + 19 * HOUR + 20 * MINUTE,
    );
    encounter(
        store,
        &acme,
        &honolulu,
        1,
        Channel::Call,
        at_1905,
        None,
        Some((at_1905 + MINUTE, "resolved")),
    )
    .await;
    encounter(
        store,
        &acme,
        &honolulu,
        2,
        Channel::Call,
        at_1920,
        None,
        Some((at_1920 + MINUTE, "unresolved")),
    )
    .await;
    // Voicemail and busy the same day: not answered.
    encounter(
        store,
        &acme,
        &honolulu,
        3,
        Channel::Call,
        day20 + HOUR,
        None,
        Some((day20 + 2 * HOUR, "voicemail")),
    )
    .await;
    encounter(
        store,
        &acme,
        &new_york,
        1,
        Channel::Call,
        day20 + HOUR,
        None,
        Some((day20 + 2 * HOUR, "busy")),
    )
    .await;
    // Day 21: a call created at 08:00 but claimed (placed) at 14:10 UTC, answered; a text;
    // a call that failed.
    let day21 = 21 * DAY;
    encounter(
        store,
        &acme,
        &new_york,
        2,
        Channel::Call,
        day21 + 8 * HOUR,
        Some(day21 + 14 * HOUR + 10 * MINUTE),
        Some((day21 + 15 * HOUR, "escalated")),
    )
    .await;
    encounter(
        store,
        &acme,
        &new_york,
        3,
        Channel::Sms,
        day21,
        None,
        Some((day21 + HOUR, "resolved")),
    )
    .await;
    encounter(
        store,
        &acme,
        &kolkata,
        1,
        Channel::Call,
        day21 + 3 * HOUR + 40 * MINUTE,
        None,
        Some((day21 + 4 * HOUR, "no-answer")),
    )
    .await;
    encounter(
        store,
        &acme,
        &kolkata,
        2,
        Channel::Call,
        day21 + 5 * HOUR + 40 * MINUTE,
        None,
        Some((day21 + 6 * HOUR, "failed")),
    )
    .await;
    // Kolkata is UTC+05:30: 03:50 UTC is 09:20 local, answered.
    encounter(
        store,
        &acme,
        &kolkata,
        3,
        Channel::Call,
        day21 + 3 * HOUR + 50 * MINUTE,
        None,
        Some((day21 + 4 * HOUR, "declined")),
    )
    .await;
    // Before the window, still running, and another organisation's: none counts.
    encounter(
        store,
        &acme,
        &old,
        1,
        Channel::Call,
        5 * DAY,
        None,
        Some((5 * DAY + MINUTE, "resolved")),
    )
    .await;
    encounter(store, &acme, &old, 2, Channel::Call, day21, None, None).await;
    let theirs = enroll_in(store, &other, "+15550100001", "Pacific/Honolulu").await;
    encounter(
        store,
        &other,
        &theirs,
        1,
        Channel::Call,
        at_1905,
        None,
        Some((at_1905 + MINUTE, "resolved")),
    )
    .await;

    // Delivery attempts: three on day 20 (10 ms 200, 30 ms 500, 50 ms 204), one on day 21,
    // one before the window; another organisation's on day 20.
    attempts(
        store,
        acme.org,
        &[
            (day20 + HOUR, Some(200), 10),
            (day20 + 2 * HOUR, Some(500), 30),
            (day20 + 3 * HOUR, Some(204), 50),
            (day21 + HOUR, None, 7),
            (5 * DAY, Some(200), 1),
        ],
    )
    .await;
    attempts(store, other.org, &[(day20, Some(500), 999)]).await;
    (acme.org, other.org)
}

fn outcome(day: i64, channel: Channel, outcome: &str, count: u64) -> OutcomeCount {
    OutcomeCount {
        day,
        channel,
        outcome: outcome.to_owned(),
        count,
    }
}

fn slot(zone: &str, slot_start: Millis, count: u64) -> AnsweredSlot {
    AnsweredSlot {
        time_zone: zone.to_owned(),
        slot_start,
        count,
    }
}

#[tokio::test]
async fn the_overview_counts_one_organisations_window_alike_on_both_backends() {
    let backend = backend().await;
    let sqlite = sqlite_backend().await;
    let (acme, other) = scenario(&backend.store).await;
    let (sqlite_acme, _) = scenario(&sqlite.store).await;

    let overview = backend.store.overview(&window(acme, 1_000)).await.unwrap();
    let on_sqlite = sqlite
        .store
        .overview(&window(sqlite_acme, 1_000))
        .await
        .unwrap();
    assert_eq!(overview, on_sqlite, "both backends answer alike");

    let (day20, day21) = (20 * DAY, 21 * DAY);
    assert_eq!(
        overview,
        Overview {
            active: 1,
            paused: 1,
            ended: 1,
            outcomes: vec![
                outcome(20, Channel::Call, "busy", 1),
                outcome(20, Channel::Call, "resolved", 1),
                outcome(20, Channel::Call, "unresolved", 1),
                outcome(20, Channel::Call, "voicemail", 1),
                outcome(21, Channel::Call, "declined", 1),
                outcome(21, Channel::Call, "escalated", 1),
                outcome(21, Channel::Call, "failed", 1),
                outcome(21, Channel::Call, "no-answer", 1),
                outcome(21, Channel::Sms, "resolved", 1),
            ],
            answered_slots: vec![
                slot("America/New_York", day21 + 14 * HOUR, 1),
                slot("Asia/Kolkata", day21 + 3 * HOUR + 45 * MINUTE, 1),
                slot("Pacific/Honolulu", day20 + 19 * HOUR, 1),
                slot("Pacific/Honolulu", day20 + 19 * HOUR + 15 * MINUTE, 1),
            ],
            answered_slots_truncated: false,
            deliveries: vec![
                DeliveryDay {
                    day: 20,
                    attempts: 3,
                    succeeded: 2,
                    p50_ms: 30,
                    p99_ms: 50,
                },
                DeliveryDay {
                    day: 21,
                    attempts: 1,
                    succeeded: 0,
                    p50_ms: 7,
                    p99_ms: 7,
                },
            ],
        }
    );

    // The heat map's rows are bounded; the answer says when there were more.
    let bounded = backend.store.overview(&window(acme, 2)).await.unwrap();
    assert_eq!(bounded.answered_slots, overview.answered_slots[..2]);
    assert!(bounded.answered_slots_truncated);
    assert_eq!(
        bounded,
        sqlite
            .store
            .overview(&window(sqlite_acme, 2))
            .await
            .unwrap()
    );

    // The neighbour sees only its own.
    let theirs = backend.store.overview(&window(other, 1_000)).await.unwrap();
    assert_eq!((theirs.active, theirs.paused, theirs.ended), (1, 0, 0));
    assert_eq!(
        theirs.outcomes,
        vec![outcome(20, Channel::Call, "resolved", 1)]
    );
    assert_eq!(theirs.deliveries.len(), 1);
    assert_eq!(theirs.deliveries[0].p99_ms, 999);
    // An empty window.
    let empty = backend
        .store
        .overview(&OverviewQuery {
            org_id: acme,
            since: 100 * DAY,
            until: 130 * DAY,
            max_slots: 10,
        })
        .await
        .unwrap();
    assert_eq!(
        empty,
        Overview {
            active: 1,
            paused: 1,
            ..Overview::default()
        }
    );
}

/// Two organisations' sequences with encounters and report messages (answers acme's
/// sequences and the neighbour's).
async fn report_scenario(store: &Store) -> (OrgId, Vec<SequenceId>, SequenceId) {
    let acme = tenant(store, "Acme").await;
    let other = tenant(store, "Other").await;
    let running = enroll_in(store, &acme, "+15550100001", "America/Chicago").await;
    let reported = enroll_in(store, &acme, "+15550100002", "America/Chicago").await;
    let quiet = enroll_in(store, &acme, "+15550100003", "America/Chicago").await;
    let theirs = enroll_in(store, &other, "+15550100004", "America/Chicago").await;
    encounter(
        store,
        &acme,
        &running,
        1,
        Channel::Call,
        100,
        None,
        Some((200, "voicemail")),
    )
    .await;
    encounter(
        store,
        &acme,
        &running,
        0,
        Channel::Call,
        50,
        None,
        Some((60, "busy")),
    )
    .await;
    encounter(store, &other, &theirs, 0, Channel::Call, 50, None, None).await;
    let hook = endpoint(store, acme.org, "https://receiver.example/hooks").await;
    let their_hook = endpoint(store, other.org, "https://theirs.example/hooks").await;
    let mut tx = store.begin().await.unwrap();
    for (org, to, sequence, webhook_id, is_test, body) in [
        (acme.org, hook.id, reported.id, "msg_1", false, "first"),
        (acme.org, hook.id, reported.id, "msg_2", false, "latest"),
        (acme.org, hook.id, reported.id, "msg_3", true, "a test"),
        (
            other.org,
            their_hook.id,
            theirs.id,
            "msg_4",
            false,
            "theirs",
        ),
    ] {
        let message = NewMessage {
            org_id: org,
            webhook_id,
            event_type: "sequence.ended",
            sequence_id: Some(sequence),
            is_test,
            body: body.as_bytes(),
            created_at: 0,
        };
        store
            .insert_message(&mut tx, &message, Recipients::One(to), 0)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    (acme.org, vec![running.id, reported.id, quiet.id], theirs.id)
}

#[tokio::test]
async fn a_page_of_reports_is_read_in_two_statements_scoped_to_the_organisation() {
    for backend in [backend().await, sqlite_backend().await] {
        let store = &backend.store;
        let (acme, ours, theirs) = report_scenario(store).await;
        let mut asked = ours.clone();
        asked.push(theirs);

        let bodies = store.report_bodies(acme, &asked).await.unwrap();
        assert_eq!(
            bodies.len(),
            1,
            "one of ours has a report; theirs is not ours"
        );
        assert_eq!(bodies[&ours[1]], b"latest", "the latest non-test message");

        let encounters = store.encounters_of_sequences(acme, &asked).await.unwrap();
        assert_eq!(encounters.len(), 4, "every id asked for has an entry");
        let running: Vec<(i64, EncounterStatus, Option<&str>)> = encounters[&ours[0]]
            .iter()
            .map(|e| (e.attempt, e.status, e.outcome.as_deref()))
            .collect();
        assert_eq!(
            running,
            vec![
                (0, EncounterStatus::Ended, Some("busy")),
                (1, EncounterStatus::Ended, Some("voicemail")),
            ],
            "in (step, attempt) order"
        );
        assert!(encounters[&ours[1]].is_empty() && encounters[&ours[2]].is_empty());
        assert!(
            encounters[&theirs].is_empty(),
            "another organisation's: nothing"
        );

        assert!(store.report_bodies(acme, &[]).await.unwrap().is_empty());
        assert!(
            store
                .encounters_of_sequences(acme, &[])
                .await
                .unwrap()
                .is_empty()
        );
    }
}
