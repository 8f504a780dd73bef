//! The provider capacity governor: a provider's limits make due encounters wait, never fail.
//!
//! - **Vapi calls**: at most `max_concurrent_calls − reserve_for_inbound` calls hold a slot
//!   at once. A slot is held from the claim until the encounter ends (its end-of-call report or
//!   read-back arrives, or Clarion gives up on it), and counted from the database
//!   ([`Store::provider_load`]), so a restart or a second node sees the same count; the claim
//!   counts again inside its own transaction ([`Store::provider_slots_in_use`]), which decides.
//! - **Twilio texts**: sends are paced to `messages_per_second` per sender (this process's
//!   pace, in real time).
//! - **Fair shares**: waiting encounters are chosen round robin over organisations (calls: the
//!   organisation holding the fewest slots first), in due order within one.
//! - **Waits are visible**: every encounter that waits is recorded once in its sequence's
//!   events (`deferred`, reason `provider-capacity`), and `/metrics` shows the slots in use
//!   and the queue ([`Scheduler::provider_capacity`]).
//! - **Refusals re-queue**: an answer proving the provider did not start the encounter for
//!   lack of capacity (Vapi's `call.start.error-subscription-concurrency-limit-reached`,
//!   Twilio's 429 / 20429) puts it back in the queue, unclaimed: it is claimed, and so
//!   re-checked (calling hours, suppression, the sequence still running), before it is sent
//!   again, and it is never reported failed for it.

use super::*;

/// The governor's limits (`[vapi]`, `[twilio]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProviderLimits {
    /// `vapi.max_concurrent_calls`: the account's concurrent-call slots.
    pub max_concurrent_calls: u32,
    /// `vapi.reserve_for_inbound`: slots outbound calls leave free for inbound calls.
    pub reserve_for_inbound: u32,
    /// `twilio.messages_per_second`: sends per second per sender.
    pub messages_per_second: f64,
}

impl Default for ProviderLimits {
    fn default() -> Self {
        Self {
            max_concurrent_calls: 10,
            reserve_for_inbound: 0,
            messages_per_second: 1.0,
        }
    }
}

impl ProviderLimits {
    /// The slots outbound calls may hold.
    pub fn call_slots(&self) -> u64 {
        u64::from(
            self.max_concurrent_calls
                .saturating_sub(self.reserve_for_inbound),
        )
    }
}

/// What `/metrics` shows of the governor: read from the database at the time of asking.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProviderCapacity {
    /// Vapi calls holding a slot (claimed, not ended); 0 without Vapi.
    pub call_slots_in_use: u64,
    /// The slots outbound calls may hold (`max_concurrent_calls − reserve_for_inbound`).
    pub call_slots: u64,
    /// Calls queued and recorded as waiting for a slot.
    pub calls_waiting: u64,
    /// Texts queued and recorded as waiting for their sender's pace.
    pub texts_waiting: u64,
}

/// How long Clarion leaves Vapi alone after it refused a call for lack of a slot, unless one
/// of Clarion's calls ends first (which frees a slot it knows of). Slots held by inbound calls
/// free unseen: this is how often Clarion looks.
pub(super) const VAPI_CAPACITY_BACKOFF: Duration = Duration::from_secs(5);

/// How long a Twilio sender rests after a 429 / 20429, before its next send.
pub(super) const TWILIO_RATE_LIMIT_BACKOFF: Duration = Duration::from_secs(1);

/// What [`Scheduler::choose_queued`] chose.
#[derive(Debug, Default)]
pub(super) struct Chosen {
    /// Encounters to claim and send now.
    pub(super) take: Vec<EncounterId>,
    /// When a text held back by its sender's pace may go.
    pub(super) paced_until: Option<tokio::time::Instant>,
    /// When to try calls again after Vapi refused one for lack of a slot.
    pub(super) retry_at: Option<tokio::time::Instant>,
}

/// After Vapi refused a call for lack of a slot: no call is tried before this instant unless
/// one of Clarion's calls ends first.
#[derive(Debug, Default)]
pub(super) struct CallBackoff(Mutex<Option<tokio::time::Instant>>);

impl CallBackoff {
    fn until(&self) -> Option<tokio::time::Instant> {
        let mut until = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if until.is_some_and(|at| at <= tokio::time::Instant::now()) {
            *until = None;
        }
        *until
    }

    pub(super) fn start(&self) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(tokio::time::Instant::now() + VAPI_CAPACITY_BACKOFF);
    }

    /// One of Clarion's calls ended: a slot is free at Vapi.
    pub(super) fn clear(&self) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// Per-sender pacing of sends (real time): the next instant each sender may send.
#[derive(Debug, Default)]
pub(super) struct Pacer {
    next: Mutex<HashMap<String, tokio::time::Instant>>,
}

impl Pacer {
    /// Takes `sender`'s next send if it is due: answers `Ok(())` and moves the sender's next
    /// send one interval on, or `Err(at)` with when it may send.
    fn take(
        &self,
        sender: &str,
        interval: Duration,
        now: tokio::time::Instant,
    ) -> Result<(), tokio::time::Instant> {
        let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
        match next.get(sender) {
            Some(at) if *at > now => Err(*at),
            _ => {
                next.insert(sender.to_owned(), now + interval);
                Ok(())
            }
        }
    }

    /// Holds `sender`'s next send back for at least `rest` (Twilio said it sent too fast).
    pub(super) fn rest(&self, sender: &str, rest: Duration) {
        let at = tokio::time::Instant::now() + rest;
        let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
        let entry = next.entry(sender.to_owned()).or_insert(at);
        *entry = (*entry).max(at);
    }
}

/// The event recorded when an encounter starts waiting for provider capacity.
fn capacity_wait_detail(wait: &CapacityWait, refused: bool) -> Value {
    json!({
        "type": "deferred",
        "step": wait.step,
        "attempt": wait.attempt,
        "channel": wait.channel.as_str(),
        "reason": "provider-capacity",
        // Unknown: it starts as soon as a slot frees (or its sender's pace allows).
        "until": null,
        // Whether the provider itself refused it (and it was put back in the queue).
        "refused_by_provider": refused,
    })
}

impl Scheduler {
    /// The governor's state, for `/metrics`.
    pub async fn provider_capacity(&self) -> Result<ProviderCapacity, SchedulerError> {
        let store = &self.inner.store;
        let limits = self.inner.config.limits;
        let mut capacity = ProviderCapacity::default();
        if matches!(self.provider(Channel::Call), Provider::Vapi(_)) {
            let load = store.provider_load(Channel::Call).await?;
            capacity.call_slots_in_use = load.in_use();
            capacity.call_slots = limits.call_slots();
            capacity.calls_waiting = load.waiting;
        }
        if matches!(self.provider(Channel::Sms), Provider::Twilio(_)) {
            capacity.texts_waiting = store.provider_load(Channel::Sms).await?.waiting;
        }
        Ok(capacity)
    }

    /// The queued encounters on `channel` the provider worker sends now (not in `seen`):
    /// calls up to the free slots, the organisation holding the fewest first; texts whose
    /// sender's pace allows, round robin over organisations. Those left waiting are recorded
    /// (once each). Also answers when a paced sender may send next.
    pub(super) async fn choose_queued(
        &self,
        channel: Channel,
        seen: &HashSet<EncounterId>,
    ) -> Result<Chosen, SchedulerError> {
        let store = &self.inner.store;
        let limits = self.inner.config.limits;
        match self.provider(channel) {
            Provider::Vapi(Some(_)) => {
                let load = store.provider_load(channel).await?;
                let backoff = self.inner.call_backoff.until();
                let free = if backoff.is_some() {
                    0
                } else {
                    limits.call_slots().saturating_sub(load.in_use())
                };
                let per_org = u32::try_from(free)
                    .unwrap_or(u32::MAX)
                    .clamp(1, PROVIDER_QUEUE_BATCH);
                let mut queued: Vec<QueuedEncounter> = store
                    .queued_encounters(channel, per_org)
                    .await?
                    .into_iter()
                    .filter(|q| !seen.contains(&q.id))
                    .collect();
                let held = |org: OrgId| {
                    load.in_use_by_org
                        .iter()
                        .find(|(o, _)| *o == org)
                        .map_or(0, |(_, n)| *n)
                };
                // Fair shares: the next slot goes to the organisation that would then hold
                // the fewest; ties to the earlier-due encounter.
                queued.sort_by_key(|q| (held(q.org_id) + u64::from(q.rank_in_org), q.id));
                let take: Vec<EncounterId> = queued
                    .iter()
                    .take(usize::try_from(free).unwrap_or(usize::MAX))
                    .map(|q| q.id)
                    .collect();
                if take.len() as u64 >= free {
                    // Every free slot is spoken for: whatever else is queued waits.
                    self.record_capacity_waits(channel, &take).await?;
                }
                Ok(Chosen {
                    take,
                    paced_until: None,
                    retry_at: backoff,
                })
            }
            Provider::Twilio(Some(twilio)) => {
                let interval =
                    Duration::from_secs_f64(1.0 / limits.messages_per_second.max(f64::EPSILON));
                let queued = store
                    .queued_encounters(channel, PROVIDER_QUEUE_BATCH)
                    .await?;
                let now = tokio::time::Instant::now();
                let mut take = Vec::new();
                let mut next_send: Option<tokio::time::Instant> = None;
                // Round robin over organisations (the order of the queue), each sender at its
                // pace: a sender that must wait does not hold up another's texts.
                for q in queued.iter().filter(|q| !seen.contains(&q.id)) {
                    let sender = sender_key(twilio.sender_for(q.org_id));
                    match self.inner.pacer.take(sender, interval, now) {
                        Ok(()) => take.push(q.id),
                        Err(at) => next_send = Some(next_send.map_or(at, |n| n.min(at))),
                    }
                }
                if next_send.is_some() {
                    self.record_capacity_waits(channel, &take).await?;
                }
                Ok(Chosen {
                    take,
                    paced_until: next_send,
                    retry_at: None,
                })
            }
            _ => Ok(Chosen::default()),
        }
    }

    /// Records every queued encounter on `channel` but `except` as waiting for capacity; each
    /// wait once, in its sequence's events.
    async fn record_capacity_waits(
        &self,
        channel: Channel,
        except: &[EncounterId],
    ) -> Result<(), SchedulerError> {
        let store = &self.inner.store;
        let now = self.inner.clock.now_millis();
        let mut tx = WriteTx::begin(&self.inner).await?;
        let waits = store
            .mark_capacity_waits(&mut tx.tx, channel, except, now)
            .await?;
        if waits.is_empty() {
            tx.tx.rollback().await?;
            return Ok(());
        }
        for wait in &waits {
            tx.record(
                wait.sequence_id,
                now,
                "deferred".to_owned(),
                capacity_wait_detail(wait, false),
            );
        }
        tx.commit(store).await?;
        tracing::info!(
            channel = channel.as_str(),
            waiting = waits.len(),
            "encounters wait for provider capacity"
        );
        Ok(())
    }

    /// Puts a claimed encounter back in the queue after its provider proved it did not start
    /// it for lack of capacity (`provider_ref`: the reference it was recorded under, `None`
    /// while the answer is not recorded), recording the wait. Answers whether it was put back
    /// (`false`: it had moved on, nothing changed).
    pub(super) async fn requeue_for_capacity(
        &self,
        id: EncounterId,
        provider_ref: Option<&str>,
    ) -> Result<bool, SchedulerError> {
        let store = &self.inner.store;
        let now = self.inner.clock.now_millis();
        let mut tx = WriteTx::begin(&self.inner).await?;
        let Some(wait) = store
            .requeue_encounter(&mut tx.tx, id, provider_ref, now)
            .await?
        else {
            return Ok(false);
        };
        tx.record(
            wait.sequence_id,
            now,
            "deferred".to_owned(),
            capacity_wait_detail(&wait, true),
        );
        tx.commit(store).await?;
        tracing::info!(
            encounter_id = id.0,
            "the provider did not start the encounter for lack of capacity; queued again"
        );
        self.inner.provider_wake.notify_one();
        Ok(true)
    }
}
