//! The outbox entry point: reports become messages and deliveries inside the caller's
//! transaction.

use std::sync::Arc;
use std::time::Duration;

use clarion_store::{
    EndpointId, IdKind, MessageId, Millis, NewMessage, OrgId, Recipients, SequenceId, Store,
    StoreError, Tx,
};
use clarion_webhooks::{EVENT_TYPE_SEQUENCE_ENDED, SequenceReport, Timestamp};
use rand::Rng;
use rand::distr::Alphanumeric;
use tokio::sync::Notify;

/// The event type of a test report sent with the "test" button; receivers see it in the
/// `clarion-event-type` header and in the `msg_test_` prefix of `webhook-id`.
pub const EVENT_TYPE_TEST: &str = clarion_webhooks::EVENT_TYPE_SEQUENCE_ENDED_TEST;

/// A fresh `webhook-id`: `msg_` and 24 random alphanumerics. It names the message for all of
/// its attempts, so receivers de-duplicate on it; it never contains a `.`, which would be
/// ambiguous in the signed content.
pub fn new_webhook_id(prefix: &str) -> String {
    let random: String = rand::rng()
        .sample_iter(&Alphanumeric)
        .take(24)
        .map(char::from)
        .collect();
    format!("{prefix}{random}")
}

/// What the outbox wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enqueued {
    pub webhook_id: String,
    pub message_id: MessageId,
    /// Deliveries created (one per enabled endpoint).
    pub deliveries: u64,
}

/// The handle through which the rest of Clarion queues reports. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Outbox {
    store: Store,
    first_delay_ms: Millis,
    wake: Arc<Notify>,
    /// The dispatcher this outbox feeds, when it runs on this node: whose adaptive
    /// per-endpoint limits the endpoint stats show.
    dispatcher: Option<crate::Dispatcher>,
}

impl Outbox {
    /// An outbox over `store`; first attempts are due `first_delay` after enqueueing, and
    /// `wake` is notified after a commit (the dispatcher waits on it).
    pub fn new(store: Store, first_delay: Duration, wake: Arc<Notify>) -> Self {
        let first_delay_ms = Millis::try_from(first_delay.as_millis()).unwrap_or(Millis::MAX);
        Self {
            store,
            first_delay_ms,
            wake,
            dispatcher: None,
        }
    }

    /// This outbox, reporting `dispatcher`'s per-endpoint limits
    /// ([`Outbox::endpoint_concurrency_limit`]).
    pub(crate) fn with_dispatcher(self, dispatcher: crate::Dispatcher) -> Self {
        Self {
            dispatcher: Some(dispatcher),
            ..self
        }
    }

    /// This outbox without its dispatcher's limits: for a node that never runs the dispatcher
    /// (`role = "api"`), whose limits would only ever be the starting value.
    pub fn without_dispatcher(self) -> Self {
        Self {
            dispatcher: None,
            ..self
        }
    }

    /// How many attempts to `endpoint` this node's dispatcher lets be in flight now (its
    /// adaptive limit, kept in this process's memory); `None` when no dispatcher runs here.
    pub fn endpoint_concurrency_limit(&self, endpoint: EndpointId) -> Option<u32> {
        self.dispatcher
            .as_ref()
            .map(|dispatcher| dispatcher.endpoint_limit(endpoint))
    }

    /// Queues the End of Sequence Report for every enabled endpoint of the organisation,
    /// inside `tx`: the report is durable exactly when the caller's transaction (the one that
    /// ended the sequence) commits. The body is serialised once, here; every attempt sends
    /// these bytes.
    ///
    /// Call [`Outbox::wake`] after the commit so that the first attempt goes out at once.
    pub async fn enqueue_report(
        &self,
        tx: &mut Tx,
        org: OrgId,
        report: &SequenceReport,
        now: Millis,
    ) -> Result<Enqueued, StoreError> {
        let body = serde_json::to_vec(report)
            .map_err(|_| StoreError::Corrupt("a report that does not serialise"))?;
        let webhook_id = new_webhook_id("msg_");
        let message = NewMessage {
            org_id: org,
            webhook_id: &webhook_id,
            event_type: EVENT_TYPE_SEQUENCE_ENDED,
            sequence_id: self.sequence_of(org, report),
            is_test: false,
            body: &body,
            created_at: now,
        };
        let first_attempt_at = now.saturating_add(self.first_delay_ms);
        let (message_id, deliveries) = self
            .store
            .insert_message(tx, &message, Recipients::AllEnabled, first_attempt_at)
            .await?;
        Ok(Enqueued {
            webhook_id,
            message_id,
            deliveries,
        })
    }

    /// [`Outbox::enqueue_report`] for many reports in one go (two statements in all): what
    /// the scheduler uses for the sequences that end in one transaction. Answers the number
    /// of deliveries created.
    pub async fn enqueue_reports(
        &self,
        tx: &mut Tx,
        reports: &[(OrgId, &SequenceReport)],
        now: Millis,
    ) -> Result<u64, StoreError> {
        let mut bodies = Vec::with_capacity(reports.len());
        for (org, report) in reports {
            let body = serde_json::to_vec(report)
                .map_err(|_| StoreError::Corrupt("a report that does not serialise"))?;
            bodies.push((
                *org,
                self.sequence_of(*org, report),
                new_webhook_id("msg_"),
                body,
            ));
        }
        let messages: Vec<NewMessage<'_>> = bodies
            .iter()
            .map(|(org, sequence_id, webhook_id, body)| NewMessage {
                org_id: *org,
                webhook_id,
                event_type: EVENT_TYPE_SEQUENCE_ENDED,
                sequence_id: *sequence_id,
                is_test: false,
                body,
                created_at: now,
            })
            .collect();
        self.store
            .insert_report_messages(tx, &messages, now.saturating_add(self.first_delay_ms))
            .await
    }

    /// Queues events of one type (`encounter.ended`, `endpoint.disabled`) inside `tx`, each
    /// for the endpoints of its organisation subscribed to `event_type`, in the order given
    /// (two statements in all). Each body is serialised once, here. Answers the number of
    /// deliveries created.
    pub async fn enqueue_events<T: serde::Serialize>(
        &self,
        tx: &mut Tx,
        event_type: &'static str,
        events: &[(OrgId, SequenceId, T)],
        now: Millis,
    ) -> Result<u64, StoreError> {
        self.enqueue_serialised(
            tx,
            event_type,
            events
                .iter()
                .map(|(org, sequence, event)| (*org, Some(*sequence), event)),
            now,
        )
        .await
    }

    /// [`Outbox::enqueue_events`] for events that name no sequence.
    pub async fn enqueue_org_events<T: serde::Serialize>(
        &self,
        tx: &mut Tx,
        event_type: &'static str,
        events: &[(OrgId, T)],
        now: Millis,
    ) -> Result<u64, StoreError> {
        self.enqueue_serialised(
            tx,
            event_type,
            events.iter().map(|(org, event)| (*org, None, event)),
            now,
        )
        .await
    }

    async fn enqueue_serialised<'a, T: serde::Serialize + 'a>(
        &self,
        tx: &mut Tx,
        event_type: &'static str,
        events: impl Iterator<Item = (OrgId, Option<SequenceId>, &'a T)>,
        now: Millis,
    ) -> Result<u64, StoreError> {
        let mut bodies = Vec::new();
        for (org, sequence_id, event) in events {
            let body = serde_json::to_vec(event)
                .map_err(|_| StoreError::Corrupt("an event that does not serialise"))?;
            bodies.push((org, sequence_id, new_webhook_id("msg_"), body));
        }
        if bodies.is_empty() {
            return Ok(0);
        }
        let messages: Vec<NewMessage<'_>> = bodies
            .iter()
            .map(|(org, sequence_id, webhook_id, body)| NewMessage {
                org_id: *org,
                webhook_id,
                event_type,
                sequence_id: *sequence_id,
                is_test: false,
                body,
                created_at: now,
            })
            .collect();
        self.store
            .insert_report_messages(tx, &messages, now.saturating_add(self.first_delay_ms))
            .await
    }

    /// The internal id of the sequence a report is about: the report carries the
    /// organisation's public id ([`clarion_store::public_id`]), the message row the internal
    /// one (what `GET /v1/sequences/{id}` and the delivery filters look up).
    fn sequence_of(&self, org: OrgId, report: &SequenceReport) -> Option<SequenceId> {
        self.store
            .public_ids(org)
            .decode(IdKind::Sequence, report.id)
            .map(SequenceId)
    }

    /// Queues a sample report, marked as a test, for one endpoint, and wakes the dispatcher.
    pub async fn enqueue_test(
        &self,
        org: OrgId,
        endpoint: EndpointId,
        now: Millis,
    ) -> Result<Enqueued, StoreError> {
        let mut report = clarion_webhooks::examples::call_only();
        report.last_updated = Timestamp::from_unix_millis(now).unwrap_or(report.last_updated);
        let body = serde_json::to_vec(&report)
            .map_err(|_| StoreError::Corrupt("a report that does not serialise"))?;
        let webhook_id = new_webhook_id("msg_test_");
        let message = NewMessage {
            org_id: org,
            webhook_id: &webhook_id,
            event_type: EVENT_TYPE_TEST,
            sequence_id: None,
            is_test: true,
            body: &body,
            created_at: now,
        };
        let mut tx = self.store.begin().await?;
        let (message_id, deliveries) = self
            .store
            .insert_message(&mut tx, &message, Recipients::One(endpoint), now)
            .await?;
        tx.commit().await?;
        self.wake();
        Ok(Enqueued {
            webhook_id,
            message_id,
            deliveries,
        })
    }

    /// Tells this node's dispatcher that a bulk recovery was started (it advances it at its
    /// next round; without a dispatcher here, a worker node finds it within a second).
    pub fn recovery_started(&self) {
        match &self.dispatcher {
            Some(dispatcher) => dispatcher.recovery_started(),
            None => self.wake(),
        }
    }

    /// Tells the dispatcher that new work was committed.
    pub fn wake(&self) {
        self.wake.notify_one();
    }
}
