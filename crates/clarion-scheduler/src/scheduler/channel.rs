//! The channel interface: who serves a channel's encounters (the simulator, Vapi, Twilio) and
//! what that provider does with them, so that the due loop, the provider worker and the
//! overdue loop never ask which provider is configured.
//!
//! [`Provider`] is the interface, as an enum with one variant per provider rather than a
//! `dyn` trait: its operations are async and need the `Scheduler`, a `dyn` trait with async
//! methods needs boxed futures (`async-trait`) on every request, and the set of providers is
//! closed and chosen at start-up from the configuration. Matching keeps every call free of
//! allocation, and adding a provider means a variant here, its arms below and its own module
//! (`vapi.rs`, `twilio.rs`); the compiler lists every arm to fill. The loops call only the
//! methods.
//!
//! What the interface does **not** decide is the contact check: every provider request, and
//! every retry after the provider certainly did not take it, goes through
//! [`Scheduler::claim_for_request`] first, whatever the provider.

use super::*;
use clarion_engine::Channel;

/// Who serves a channel's encounters.
#[derive(Debug, Clone, Copy)]
pub(super) enum Provider<'a> {
    /// The deterministic simulator: contacts nobody, so its encounters are answered right
    /// after their commit (in one transaction per batch) and never claimed.
    Simulator,
    /// Calls through Vapi. `None` when Vapi is no longer configured but a stored call placed
    /// through it is still open (it can then only be given up on).
    Vapi(Option<&'a VapiClient>),
    /// SMS conversations through Twilio. `None` as for Vapi.
    Twilio(Option<&'a TwilioChannel>),
}

/// What reconciling an encounter whose provider answer was never recorded does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Unconfirmed {
    /// The request may have gone out and the provider can be asked: recorded under this
    /// provider reference, due for a look-up at once.
    LookUp(String),
    /// Ended `failed`, never sent again.
    EndFailed,
}

impl Scheduler {
    /// The provider serving new encounters on `channel` (`[channels]`): Vapi for calls and
    /// Twilio for SMS when configured, else the simulator.
    pub(super) fn provider(&self, channel: Channel) -> Provider<'_> {
        let config = &self.inner.config;
        match channel {
            Channel::Call => config
                .vapi
                .as_ref()
                .map_or(Provider::Simulator, |vapi| Provider::Vapi(Some(vapi))),
            Channel::Sms => config
                .twilio
                .as_ref()
                .map_or(Provider::Simulator, |twilio| Provider::Twilio(Some(twilio))),
        }
    }

    /// The provider of a stored encounter that is still open with a provider (overdue): the
    /// channel's real provider, whether or not it is still configured. (One real provider per
    /// channel; a second one would record its name on the encounter.)
    pub(super) fn provider_of_open(&self, encounter: &EncounterRow) -> Provider<'_> {
        let config = &self.inner.config;
        match encounter.channel {
            Channel::Call => Provider::Vapi(config.vapi.as_ref()),
            Channel::Sms => Provider::Twilio(config.twilio.as_ref()),
        }
    }

    /// The channels whose encounters go to a real provider, by wire name.
    pub(super) fn provider_channels(&self) -> Vec<Channel> {
        Channel::ALL
            .into_iter()
            .filter(|channel| self.provider(*channel).contacts_patient())
            .collect()
    }
}

impl Provider<'_> {
    /// Whether this provider contacts the patient: its encounters wait, committed, for the
    /// provider worker, which claims each (the contact check) before the request. `false`
    /// for the simulator, whose encounters are answered right after the commit.
    pub(super) fn contacts_patient(self) -> bool {
        !matches!(self, Provider::Simulator)
    }

    /// Writes that belong to a first claim, in the claim's transaction (Twilio: the sender
    /// the conversation is begun from, which routes the patient's replies: the caller number
    /// chosen for it, else the organisation's configured sender).
    pub(super) async fn on_claim(
        self,
        store: &Store,
        tx: &mut Tx,
        encounter: &EncounterRow,
    ) -> Result<(), SchedulerError> {
        if let Provider::Twilio(Some(twilio)) = self {
            let sender = twilio.sender_of(encounter);
            store
                .set_encounter_sender(tx, encounter.id, sender_key(&sender))
                .await?;
        }
        Ok(())
    }

    /// Sends one claimed encounter to the provider and records the answer, in its own
    /// transaction. Retries after an answer proving the request was not taken are the
    /// provider's, each after the contact check again.
    pub(super) async fn request(
        self,
        scheduler: &Scheduler,
        started: &Started,
    ) -> Result<(), SchedulerError> {
        match self {
            Provider::Vapi(Some(vapi)) => scheduler.request_vapi_call(vapi, started).await,
            Provider::Twilio(Some(twilio)) => {
                scheduler.request_twilio_conversation(twilio, started).await
            }
            // Never claimed (the simulator), or no longer configured: nothing is sent.
            Provider::Simulator | Provider::Vapi(None) | Provider::Twilio(None) => Ok(()),
        }
    }

    /// The report object of an encounter withheld at its claim after its sequence ended: a
    /// call that was not placed, or a conversation whose opening text was not sent.
    pub(super) fn not_contacted_report(
        self,
        scheduler: &Scheduler,
        encounter: &EncounterRow,
        now: Millis,
    ) -> Value {
        const WHY: &str = "Not made: the sequence had ended before the provider was asked.";
        match self {
            Provider::Twilio(_) => {
                let mut report = scheduler.conversation_report(
                    encounter,
                    &Conversation::default(),
                    SmsEnd::Error,
                    now,
                );
                report.summary = Some(WHY.to_owned());
                serde_json::to_value(&report).unwrap_or(Value::Null)
            }
            Provider::Vapi(_) | Provider::Simulator => {
                crate::simulator::failed_call_report(encounter, WHY)
            }
        }
    }

    /// What reconciling `encounter` (committed, its provider answer never recorded) does: a
    /// claimed Vapi call is looked for at Vapi; anything else ends `failed`.
    pub(super) fn unconfirmed(self, encounter: &EncounterRow) -> Unconfirmed {
        match self {
            Provider::Vapi(Some(_)) if encounter.claimed_at.is_some() => {
                Unconfirmed::LookUp(format!("{VAPI_UNKNOWN_PREFIX}{}", encounter.id))
            }
            _ => Unconfirmed::EndFailed,
        }
    }

    /// What the overdue loop does with an open encounter of this provider whose time is up
    /// (read back, looked for, timed out or given up on); answers whether it ended.
    pub(super) async fn settle_overdue(
        self,
        scheduler: &Scheduler,
        encounter: &EncounterRow,
        now: Millis,
    ) -> Result<bool, SchedulerError> {
        match self {
            Provider::Twilio(_) => scheduler.settle_overdue_conversation(encounter).await,
            Provider::Vapi(vapi) => scheduler.settle_overdue_call(vapi, encounter, now).await,
            // The simulator's encounters end when their known end is due, never overdue.
            Provider::Simulator => Ok(false),
        }
    }

    /// Periodic upkeep the overdue loop runs for this provider, and how often (Twilio:
    /// forgetting old inbound message ids, hourly).
    pub(super) fn upkeep_every(self) -> Option<Duration> {
        match self {
            Provider::Twilio(Some(_)) => Some(INBOUND_SID_SWEEP_EVERY),
            _ => None,
        }
    }

    /// Runs the upkeep of [`Provider::upkeep_every`].
    pub(super) async fn upkeep(self, scheduler: &Scheduler) {
        if let Provider::Twilio(Some(_)) = self {
            scheduler.forget_old_inbound_messages().await;
        }
    }
}
