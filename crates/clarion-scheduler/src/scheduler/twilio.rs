//! SMS conversations through Twilio: senders per organisation, the opening text, inbound
//! replies routed by (patient, sender) and answered by the assistant, opt-outs that are
//! never lost, replayed requests refused, status callbacks.

use super::*;

/// The Twilio SMS channel.
#[derive(Debug, Clone)]
pub struct TwilioChannel {
    pub client: TwilioClient,
    /// The public address of this Clarion (`twilio.public_base_url`), for status callbacks.
    pub public_base_url: String,
    /// The Twilio account inbound texts must come from (`AccountSid`).
    pub account_sid: String,
    /// Organisations' own senders (`[twilio.senders]`); the others share the client's.
    pub senders: HashMap<OrgId, Sender>,
}

impl TwilioChannel {
    /// The sender an organisation's texts go out from.
    pub fn sender_for(&self, org: OrgId) -> &Sender {
        self.senders.get(&org).unwrap_or(self.client.sender())
    }

    /// The sender an encounter's texts go out from: the caller number chosen at its claim,
    /// else its organisation's configured sender.
    pub fn sender_of(&self, encounter: &EncounterRow) -> Sender {
        match &encounter.caller_number {
            Some(chosen) => Sender::From(chosen.number.clone()),
            None => self.sender_for(encounter.org_id).clone(),
        }
    }

    /// Every sender this deployment texts from.
    pub(super) fn all_senders(&self) -> impl Iterator<Item = &Sender> {
        std::iter::once(self.client.sender()).chain(self.senders.values())
    }

    /// Whether an inbound text was sent to this deployment: from its Twilio account, to one
    /// of its numbers or Messaging Services.
    pub(super) fn addressed_to_us(&self, message: &InboundMessage) -> bool {
        if message.account_sid.as_deref() != Some(self.account_sid.as_str()) {
            return false;
        }
        self.all_senders().any(|sender| match sender {
            Sender::From(number) => message.to.as_deref() == Some(number.as_str()),
            Sender::MessagingService(sid) => {
                message.messaging_service_sid.as_deref() == Some(sid.as_str())
            }
        })
    }
}

/// How a sender is recorded on an encounter and matched against inbound texts: the number, or
/// the Messaging Service sid.
pub(super) fn sender_key(sender: &Sender) -> &str {
    match sender {
        Sender::From(number) => number,
        Sender::MessagingService(sid) => sid,
    }
}

/// The sender keys a Twilio message (inbound, or a status callback) names: the number it was
/// sent to or from on our side, and the Messaging Service, when present.
pub(super) fn message_sender_keys<'a>(
    number: Option<&'a str>,
    service: Option<&'a str>,
) -> Vec<&'a str> {
    number.into_iter().chain(service).collect()
}

/// What sending one text came to ([`Scheduler::send_text`]).
pub(super) enum TextSend {
    /// Twilio took it (its message sid).
    Sent(Option<String>),
    /// Not sent and nothing to record: put back in the queue (rate limit) or withheld at the
    /// check before a retry.
    NotNow,
    /// Not sent, for good: the encounter ends this way.
    Unsent(SmsEnd),
}

/// The provider reference of a text Twilio refused for good (`twilio_unsent_<encounter id>`):
/// it names no message, and its encounter ends at once with the refusal's outcome.
pub(super) const TWILIO_UNSENT_PREFIX: &str = "twilio_unsent_";

/// How many times a text Twilio certainly did not accept (429, connection refused) is tried.
pub(super) const TWILIO_SEND_ATTEMPTS: u32 = 3;

/// How long an inbound Twilio `MessageSid` is remembered to refuse replays: a captured
/// request replayed within this time is refused. A year and a month: longer than any
/// sequence runs, so a replay cannot reach a conversation begun after the original.
pub(super) const INBOUND_SID_RETENTION_MILLIS: Millis = 400 * 24 * 3600 * 1000;

/// How long an inbound text waits for an opening text to its number that is still being sent
/// (see [`Scheduler::route_inbound_after_openings`]); Twilio waits 15 s for the answer.
pub(super) const OPENING_IN_FLIGHT_WAIT: Duration = Duration::from_secs(5);

/// How often old inbound message ids are swept (each sweep takes the write lock once).
pub(super) const INBOUND_SID_SWEEP_EVERY: Duration = Duration::from_secs(3600);

impl Scheduler {
    /// Opens the conversation of one claimed encounter and records Twilio's answer (and the
    /// conversation's state) at once, in its own small transaction: a reply or a STOP may
    /// arrive while other requests are still being sent, and must find the encounter.
    pub(super) async fn request_twilio_conversation(
        &self,
        twilio: &TwilioChannel,
        started: &Started,
    ) -> Result<(), SchedulerError> {
        let Some((request, conversation)) = self.start_twilio_conversation(twilio, started).await
        else {
            return Ok(());
        };
        self.record_requested(request, conversation).await
    }

    /// An SMS conversation whose contact went quiet for the template's SMS timeout (also when
    /// Twilio has been switched off since: nothing more can arrive) ends with the overdue
    /// loop.
    pub(super) async fn settle_overdue_conversation(
        &self,
        encounter: &EncounterRow,
    ) -> Result<bool, SchedulerError> {
        self.end_overdue(encounter, OverdueEnd::ConversationTimeout)
            .await
    }

    /// Forgets inbound Twilio message ids older than their retention (a bounded sweep).
    pub(super) async fn forget_old_inbound_messages(&self) {
        let before = self
            .inner
            .real_clock
            .now_millis()
            .saturating_sub(INBOUND_SID_RETENTION_MILLIS);
        if let Err(error) = self
            .inner
            .store
            .forget_inbound_messages(before, 10_000)
            .await
        {
            tracing::error!(error = %error, "forgetting old inbound message ids failed");
        }
    }

    /// Opens one committed SMS encounter with Twilio: the script's opening text, rendered
    /// with the contact's name and variables, sent with a status callback. Answers what to
    /// record (the message's sid, the conversation's time-out) and the conversation's state;
    /// or, when the text was not sent, an encounter due to end now.
    pub(super) async fn start_twilio_conversation(
        &self,
        twilio: &TwilioChannel,
        started: &Started,
    ) -> Option<(RequestedEncounter, Option<String>)> {
        let encounter = &started.encounter;
        let id = encounter.id;
        let now = self.inner.clock.now_millis();
        let source = self.twilio_source_number(encounter);
        let unsent = |end: SmsEnd| {
            let report = sms_report(
                &Conversation::default(),
                Some(end),
                (id.0, encounter.assistant_id.0),
                (source.as_deref(), &encounter.phone_number),
                (
                    clarion_webhooks::Timestamp::from_unix_millis(encounter.created_at),
                    clarion_webhooks::Timestamp::from_unix_millis(now),
                ),
            );
            let report = serde_json::to_string(&report).unwrap_or_default();
            Some((
                RequestedEncounter {
                    id,
                    provider_ref: format!("{TWILIO_UNSENT_PREFIX}{id}"),
                    ends_at: Some(now),
                    report: Some(report),
                    outcome: Some(end.engine_outcome().to_owned()),
                },
                None,
            ))
        };
        let (assistant, definition) = match (
            self.assistant(started.sequence.org_id, encounter.assistant_id)
                .await,
            self.definition(started.sequence.template_version_id).await,
        ) {
            (Ok(assistant), Ok(definition)) => (assistant, definition),
            _ => {
                tracing::error!(
                    encounter_id = id.0,
                    "assistant or template unreadable; text not sent"
                );
                return unsent(SmsEnd::Error);
            }
        };
        if let Some(text) = definition.voicemail_text(encounter.step, encounter.channel) {
            return self
                .send_voicemail_text(twilio, started, text, source.as_deref())
                .await;
        }
        let Ok(script) = ScriptConfig::from_assistant_config(&assistant.config) else {
            tracing::warn!(
                encounter_id = id.0,
                "assistant has no valid SMS script; text not sent"
            );
            return unsent(SmsEnd::Error);
        };
        let name = serde_json::from_value::<ContactInfo>(started.sequence.contact.clone())
            .ok()
            .and_then(|c| c.name);
        let variables = started
            .sequence
            .variables
            .as_object()
            .cloned()
            .unwrap_or_default();
        let mut conversation = Conversation::new(name, variables);
        let message = SendMessage {
            to: encounter.phone_number.clone(),
            sender: twilio.sender_of(encounter),
            body: conversation.open(&script),
            status_callback: Some(format!(
                "{}/providers/twilio/status",
                twilio.public_base_url.trim_end_matches('/')
            )),
        };
        match self.send_text(twilio, id, &message).await {
            TextSend::Sent(sid) => {
                tracing::info!(encounter_id = id.0, "SMS conversation opened with Twilio");
                let ends_at = now.saturating_add(
                    Millis::try_from(definition.sms_timeout_ms).unwrap_or(Millis::MAX),
                );
                let state = serde_json::to_string(&conversation).ok();
                Some((
                    RequestedEncounter {
                        id,
                        provider_ref: sid.unwrap_or_else(|| format!("twilio_{id}")),
                        ends_at: Some(ends_at),
                        report: None,
                        outcome: None,
                    },
                    state,
                ))
            }
            TextSend::NotNow => None,
            TextSend::Unsent(end) => unsent(end),
        }
    }

    /// Sends the fixed text of a call step after its voicemail (`voicemail.sms_text`) for one
    /// claimed encounter: one message from its sender (the caller number chosen at its claim,
    /// else the organisation's sender), no conversation. It
    /// ends once Twilio has taken it (or not: it is never sent again); what to record answers
    /// that end, due now, for the due loop to hand to the engine.
    pub(super) async fn send_voicemail_text(
        &self,
        twilio: &TwilioChannel,
        started: &Started,
        text: &str,
        source: Option<&str>,
    ) -> Option<(RequestedEncounter, Option<String>)> {
        let encounter = &started.encounter;
        let id = encounter.id;
        let message = SendMessage {
            to: encounter.phone_number.clone(),
            sender: twilio.sender_of(encounter),
            body: text.to_owned(),
            status_callback: Some(format!(
                "{}/providers/twilio/status",
                twilio.public_base_url.trim_end_matches('/')
            )),
        };
        let (provider_ref, unsent) = match self.send_text(twilio, id, &message).await {
            TextSend::NotNow => return None,
            TextSend::Sent(sid) => {
                tracing::info!(
                    encounter_id = id.0,
                    "text after a voicemail sent with Twilio"
                );
                (sid.unwrap_or_else(|| format!("twilio_{id}")), None)
            }
            TextSend::Unsent(end) => (format!("{TWILIO_UNSENT_PREFIX}{id}"), Some(end)),
        };
        let now = self.inner.clock.now_millis();
        let report = crate::report::voicemail_text_report(
            encounter,
            text,
            source,
            unsent.map(SmsEnd::ended_reason),
            now,
        );
        let outcome = unsent.map_or(VOICEMAIL_TEXT_SENT, SmsEnd::engine_outcome);
        Some((
            RequestedEncounter {
                id,
                provider_ref,
                ends_at: Some(now),
                report: serde_json::to_string(&report).ok(),
                outcome: Some(outcome.to_owned()),
            },
            None,
        ))
    }

    /// Sends one text of a claimed encounter: tried again (after the contact check) only
    /// when Twilio certainly did not take it, put back in the queue on Twilio's rate limit.
    pub(super) async fn send_text(
        &self,
        twilio: &TwilioChannel,
        id: EncounterId,
        message: &SendMessage,
    ) -> TextSend {
        let mut tries = 1;
        loop {
            match twilio.client.send(message).await {
                Ok(sent) => return TextSend::Sent(sent.sid),
                Err(SendError::Rejected {
                    failure: SendFailure::Retryable,
                    status,
                    code,
                }) if status == 429 || code == Some(ERROR_RATE_LIMITED) => {
                    // Twilio's rate limit: not sent. Back in the queue, at the sender's pace
                    // after a rest, claimed (and so re-checked) again before it goes; never
                    // ended for it.
                    self.inner
                        .pacer
                        .rest(sender_key(&message.sender), TWILIO_RATE_LIMIT_BACKOFF);
                    if let Err(error) = self.requeue_for_capacity(id, None).await {
                        tracing::error!(encounter_id = id.0, error = %error, "putting a text back in the queue failed");
                    }
                    return TextSend::NotNow;
                }
                Err(SendError::Rejected {
                    failure: SendFailure::Retryable,
                    ..
                }) if tries < TWILIO_SEND_ATTEMPTS => {
                    tracing::info!(
                        encounter_id = id.0,
                        tries,
                        "Twilio did not accept the text; trying again"
                    );
                    tokio::time::sleep(Duration::from_millis(500 * u64::from(tries))).await;
                    match self.recheck_before_retry(id).await {
                        Recheck::Allowed => {}
                        Recheck::Withheld => return TextSend::NotNow,
                        Recheck::Failed => return TextSend::Unsent(SmsEnd::Error),
                    }
                    tries += 1;
                }
                Err(error) => {
                    tracing::warn!(encounter_id = id.0, error = %error, "text not sent");
                    return TextSend::Unsent(match error {
                        SendError::Rejected {
                            failure: SendFailure::OptedOut,
                            ..
                        } => SmsEnd::OptOut,
                        _ => SmsEnd::Error,
                    });
                }
            }
        }
    }

    /// Ends an SMS encounter with `end`, its report built from the conversation so far, in
    /// `tx`.
    pub(super) async fn end_conversation(
        &self,
        tx: &mut WriteTx,
        encounter: &EncounterRow,
        conversation: &Conversation,
        end: SmsEnd,
        now: Millis,
    ) -> Result<(), SchedulerError> {
        let report = self.conversation_report(encounter, conversation, end, now);
        let report = serde_json::to_value(&report).map_err(|_| SchedulerError::Corrupt("sms"))?;
        self.finish_encounter(tx, encounter, end.engine_outcome(), Some(&report), now, now)
            .await
    }

    /// The report's Sms object of a conversation ending now with `end`.
    pub(super) fn conversation_report(
        &self,
        encounter: &EncounterRow,
        conversation: &Conversation,
        end: SmsEnd,
        now: Millis,
    ) -> clarion_webhooks::Sms {
        let source = self.twilio_source_number(encounter);
        sms_report(
            conversation,
            Some(end),
            (encounter.id.0, encounter.assistant_id.0),
            (source.as_deref(), &encounter.phone_number),
            (
                clarion_webhooks::Timestamp::from_unix_millis(encounter.created_at),
                clarion_webhooks::Timestamp::from_unix_millis(now),
            ),
        )
    }

    /// The number texts come from, when Clarion knows it (a Messaging Service picks one
    /// from its pool): the caller number chosen at the claim, else the configured sender's.
    pub(super) fn twilio_source_number(&self, encounter: &EncounterRow) -> Option<String> {
        if let Some(chosen) = &encounter.caller_number {
            return Some(chosen.number.clone());
        }
        let twilio = self.inner.config.twilio.as_ref()?;
        match twilio.sender_for(encounter.org_id) {
            Sender::From(number) => Some(number.clone()),
            Sender::MessagingService(_) => None,
        }
    }

    /// Whether an inbound text was sent to this deployment: from its Twilio account, to one
    /// of its configured senders or to an organisation's caller number for texts.
    pub(super) async fn addressed_to_us(
        &self,
        twilio: &TwilioChannel,
        message: &InboundMessage,
    ) -> Result<bool, SchedulerError> {
        if twilio.addressed_to_us(message) {
            return Ok(true);
        }
        let ours = message.account_sid.as_deref() == Some(twilio.account_sid.as_str());
        Ok(match (&message.to, ours) {
            (Some(to), true) => self.inner.store.is_caller_number(Channel::Sms, to).await?,
            _ => false,
        })
    }

    pub(super) fn conversation_of(encounter: &EncounterRow) -> Conversation {
        encounter
            .conversation
            .as_deref()
            .and_then(|c| serde_json::from_str(c).ok())
            .unwrap_or_default()
    }

    /// An inbound text from Twilio: routed to the conversation running with its sender,
    /// answered by the assistant (STOP and its synonyms end it as an opt-out with no reply;
    /// HELP gets the organisation's help text; an ordinary reply goes to the LLM assistant
    /// when one is configured, else — or when it fails — to the script), the conversation
    /// saved or ended. Answers the reply to send back (`None`: nothing to say, or no
    /// conversation).
    ///
    /// The answer is worked out before the write transaction (a model may take seconds, and
    /// the transaction holds the database's write lock); if another text moved the
    /// conversation meanwhile, this one is answered by the script on the new state.
    pub async fn twilio_inbound(
        &self,
        message: &InboundMessage,
    ) -> Result<Option<String>, SchedulerError> {
        let store = &self.inner.store;
        let Some(twilio) = &self.inner.config.twilio else {
            return Ok(None);
        };
        if !self.addressed_to_us(twilio, message).await? {
            tracing::warn!("inbound text for another Twilio account or number; ignored");
            return Ok(None);
        }
        if store.inbound_message_seen(&message.message_sid).await? {
            // Twilio repeated the webhook, or someone replayed it: handled already.
            return Ok(None);
        }
        let senders = message_sender_keys(
            message.to.as_deref(),
            message.messaging_service_sid.as_deref(),
        );
        let Some(seen) = self.route_inbound_after_openings(message, &senders).await? else {
            return self.opt_out_without_conversation(message, &senders).await;
        };
        let assistant = self.assistant(seen.org_id, seen.assistant_id).await?;
        let script = ScriptConfig::from_assistant_config(&assistant.config)
            .map_err(|_| SchedulerError::Corrupt("sms script"))?;
        let (mut decision, by_model) = self
            .sms_decision(
                &assistant,
                &script,
                &Self::conversation_of(&seen),
                message,
                true,
            )
            .await;

        let now = self.inner.clock.now_millis();
        let mut tx = WriteTx::begin(&self.inner).await?;
        if !store
            .record_inbound_message(&mut tx.tx, &message.message_sid, now)
            .await?
        {
            return Ok(None);
        }
        let Some(encounter) = self
            .route_inbound(Some(&mut tx.tx), message, &senders)
            .await?
        else {
            // The conversation ended since it was read (another text, or its time-out): an
            // opt-out still suppresses, and a revocation in words is confirmed once.
            let mut reply = None;
            if let Some(revocation) = inbound_revocation(message) {
                let (_, newly) = self
                    .suppress_for_sms_senders(&mut tx.tx, &message.from, &senders)
                    .await?;
                reply = revocation.confirmation(newly);
            }
            self.commit_callback(tx).await?;
            return Ok(reply);
        };
        let mut conversation = Self::conversation_of(&encounter);
        if conversation.handled.contains(&message.message_sid) {
            return Ok(None);
        }
        let mut by_model = by_model;
        if encounter.id != seen.id || encounter.conversation != seen.conversation {
            (decision, by_model) = self
                .sms_decision(&assistant, &script, &conversation, message, false)
                .await;
        }
        if decision.keyword == Keyword::Help
            && let Some(organization) = store.get_organization(encounter.org_id).await?
            && let Some(help) = organization.sms_help_text
        {
            decision.reply = Some(help);
        }
        if by_model {
            conversation.record(&message.body, &decision);
        } else {
            conversation.record_with(&script, &message.body, &decision);
        }
        if conversation.our_number.is_none() {
            conversation.our_number = message.to.clone();
        }
        conversation.handled.push(message.message_sid.clone());
        if let Some(evidence) = decision.opt_out_evidence(by_model) {
            Self::record_opt_out_evidence(&mut tx, &encounter, &evidence, now);
        }
        match decision.end {
            Some(end) => {
                self.end_conversation(&mut tx, &encounter, &conversation, end, now)
                    .await?;
            }
            None => {
                let sequence = store
                    .sequence_for_update(&mut tx.tx, encounter.sequence_id)
                    .await?
                    .ok_or(SchedulerError::Corrupt("sequence"))?;
                let timeout = self
                    .definition(sequence.template_version_id)
                    .await?
                    .sms_timeout_ms;
                let state = serde_json::to_string(&conversation)
                    .map_err(|_| SchedulerError::Corrupt("sms"))?;
                store
                    .save_conversation(
                        &mut tx.tx,
                        encounter.id,
                        &state,
                        now.saturating_add(Millis::try_from(timeout).unwrap_or(Millis::MAX)),
                    )
                    .await?;
            }
        }
        self.commit_callback(tx).await?;
        Ok(decision.reply)
    }

    /// [`Scheduler::route_inbound`], but a text that finds no conversation while an opening
    /// text to the same number is still being sent waits (at most
    /// [`OPENING_IN_FLIGHT_WAIT`]) for that send to be recorded: a patient, or their phone's
    /// auto-reply, can answer before the record of the text they answer commits, and that
    /// answer belongs to the conversation it opens. Woken when this node records a send; a
    /// send recorded by another node is seen at the next look, 50 ms later at most.
    pub(super) async fn route_inbound_after_openings(
        &self,
        message: &InboundMessage,
        senders: &[&str],
    ) -> Result<Option<EncounterRow>, SchedulerError> {
        let deadline = tokio::time::Instant::now() + OPENING_IN_FLIGHT_WAIT;
        loop {
            let recorded = self.inner.sms_recorded.notified();
            tokio::pin!(recorded);
            recorded.as_mut().enable();
            if let Some(seen) = self.route_inbound(None, message, senders).await? {
                return Ok(Some(seen));
            }
            let now = tokio::time::Instant::now();
            if now >= deadline
                || !self
                    .inner
                    .store
                    .sms_opening_in_flight(&message.from, senders)
                    .await?
            {
                return Ok(None);
            }
            let next_look = deadline.min(now + Duration::from_millis(50));
            let _ = tokio::time::timeout_at(next_look, recorded).await;
        }
    }

    /// The conversation an inbound text belongs to: one running with its sender that was
    /// begun from the number (or Messaging Service) it was sent to. Where that sender is
    /// shared and more than one organisation has such a conversation open with the patient,
    /// the text cannot be told apart: it goes to none of them (never into another
    /// organisation's), and only an opt-out acts, for all of them.
    pub(super) async fn route_inbound(
        &self,
        tx: Option<&mut Tx>,
        message: &InboundMessage,
        senders: &[&str],
    ) -> Result<Option<EncounterRow>, SchedulerError> {
        let open = self
            .inner
            .store
            .open_sms_conversations(tx, &message.from, senders)
            .await?;
        let Some(newest) = open.first() else {
            return Ok(None);
        };
        if open.iter().any(|e| e.org_id != newest.org_id) {
            tracing::warn!(
                organizations = open.len(),
                "an inbound text matches conversations of several organisations on a shared sender; routed to none"
            );
            return Ok(None);
        }
        Ok(Some(newest.clone()))
    }

    /// A STOP (or a synonym), or a revocation in words, from a number with no conversation
    /// running — after one timed out, or between steps — still puts the number on the
    /// suppression list of every organisation that has texted it from the sender it was sent
    /// to, so no later step or sequence contacts it. A revocation in words is answered with
    /// the one confirmation when it suppressed the number somewhere (a repeat gets nothing;
    /// for a keyword Twilio has confirmed already).
    pub(super) async fn opt_out_without_conversation(
        &self,
        message: &InboundMessage,
        senders: &[&str],
    ) -> Result<Option<String>, SchedulerError> {
        let Some(revocation) = inbound_revocation(message) else {
            return Ok(None);
        };
        let now = self.inner.clock.now_millis();
        let mut tx = self.inner.store.begin().await?;
        if !self
            .inner
            .store
            .record_inbound_message(&mut tx, &message.message_sid, now)
            .await?
        {
            return Ok(None);
        }
        let (organizations, newly) = self
            .suppress_for_sms_senders(&mut tx, &message.from, senders)
            .await?;
        tx.commit().await?;
        tracing::info!(
            organizations,
            "opt-out received outside a conversation; number suppressed"
        );
        self.wake();
        Ok(revocation.confirmation(newly))
    }

    /// Suppresses `phone_number` (an opt-out) for every organisation that has texted it from
    /// one of `senders`, in `tx`; answers for how many, and for how many of them it was not
    /// suppressed already.
    pub(super) async fn suppress_for_sms_senders(
        &self,
        tx: &mut Tx,
        phone_number: &str,
        senders: &[&str],
    ) -> Result<(usize, usize), SchedulerError> {
        let store = &self.inner.store;
        let now = self.inner.clock.now_millis();
        let orgs = store.sms_organizations(tx, phone_number, senders).await?;
        let mut newly = 0;
        for org in &orgs {
            if !store.is_suppressed(tx, *org, phone_number).await? {
                newly += 1;
            }
            store
                .suppress(tx, *org, phone_number, "opt-out", now)
                .await?;
        }
        Ok((orgs.len(), newly))
    }

    /// The assistant's answer to an inbound text: the script's, or — for an ordinary reply
    /// (not STOP, HELP or the turn limit), when `ask_model` and the assistant has
    /// `config.llm` and a model is configured — the model's, falling back to the script's
    /// when the model fails. The flag says whether the model answered.
    pub(super) async fn sms_decision(
        &self,
        assistant: &Assistant,
        script: &ScriptConfig,
        conversation: &Conversation,
        message: &InboundMessage,
        ask_model: bool,
    ) -> (clarion_providers::Decision, bool) {
        let mut decision = respond_to(
            script,
            conversation,
            &message.body,
            message.opt_out_type.as_deref(),
        );
        // A revocation in words is decided here, never by a model.
        let ordinary = matches!(decision.keyword, Keyword::Other | Keyword::OptIn)
            && decision.end != Some(SmsEnd::TurnLimit)
            && decision.end != Some(SmsEnd::OptOut);
        let prompt = assistant
            .config
            .get("llm")
            .and_then(|llm| llm.get("system_prompt"))
            .and_then(Value::as_str);
        let (Some(llm), Some(prompt), true, true) =
            (&self.inner.config.llm, prompt, ordinary, ask_model)
        else {
            return (decision, false);
        };
        let model = assistant
            .config
            .get("llm")
            .and_then(|llm| llm.get("model"))
            .and_then(Value::as_str);
        match llm.decide(prompt, model, conversation, &message.body).await {
            Ok(answer) => {
                decision.reply = Some(answer.reply);
                decision.end = answer.resolution.map(SmsEnd::from);
                (decision, true)
            }
            Err(error) => {
                tracing::warn!(error = %error, "the LLM assistant did not answer; the script does");
                (decision, false)
            }
        }
    }

    /// A Twilio status callback for the message that opened a conversation: a message that
    /// failed (error 21610, the recipient unsubscribed: an opt-out) ends the conversation.
    /// Answers whether it changed anything.
    pub async fn twilio_status(&self, callback: &StatusCallback) -> Result<bool, SchedulerError> {
        if !callback.status.is_failure() {
            return Ok(false);
        }
        let now = self.inner.clock.now_millis();
        let mut tx = WriteTx::begin(&self.inner).await?;
        let opted_out =
            callback.error_code == Some(clarion_providers::twilio::wire::ERROR_OPTED_OUT);
        let Some(encounter) = self
            .inner
            .store
            .encounter_by_provider_ref(&mut tx.tx, Channel::Sms, &callback.message_sid)
            .await?
            // One whose end is known already (a text after a voicemail, ended once Twilio
            // took it) is left as it is; a 21610 still suppresses, below.
            .filter(|e| e.status != EncounterStatus::Ended && e.outcome.is_none())
        else {
            // The carrier's own opt-out (21610) counts even when its message is not known
            // (yet): the callback can arrive before the send's answer is recorded.
            if opted_out && let Some(to) = &callback.to {
                let senders = message_sender_keys(
                    callback.from.as_deref(),
                    callback.messaging_service_sid.as_deref(),
                );
                let (suppressed, _) = self
                    .suppress_for_sms_senders(&mut tx.tx, to, &senders)
                    .await?;
                self.commit_callback(tx).await?;
                return Ok(suppressed > 0);
            }
            return Ok(false);
        };
        let end = if opted_out {
            SmsEnd::OptOut
        } else {
            SmsEnd::Error
        };
        if opted_out {
            let evidence = clarion_channels::revocation::Evidence {
                source: "carrier",
                detail: "21610".to_owned(),
            };
            Self::record_opt_out_evidence(&mut tx, &encounter, &evidence, now);
        }
        let conversation = Self::conversation_of(&encounter);
        self.end_conversation(&mut tx, &encounter, &conversation, end, now)
            .await?;
        self.commit_callback(tx).await?;
        Ok(true)
    }
}

/// How an inbound text revokes consent, if it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InboundRevocation {
    /// `STOP` or a synonym (or Twilio's `OptOutType=STOP`): Twilio has confirmed it.
    Keyword,
    /// A revocation in words ([`clarion_channels::revocation`]): Clarion confirms it.
    Words,
}

impl InboundRevocation {
    /// The reply owed after suppressing the number for `newly` organisations that had not
    /// suppressed it yet: the one confirmation for a revocation in words, nothing otherwise.
    fn confirmation(self, newly: usize) -> Option<String> {
        (self == InboundRevocation::Words && newly > 0)
            .then(|| clarion_providers::sms_assistant::DEFAULT_OPT_OUT_CONFIRMATION.to_owned())
    }
}

fn inbound_revocation(message: &InboundMessage) -> Option<InboundRevocation> {
    if message.keyword() == Keyword::OptOut {
        Some(InboundRevocation::Keyword)
    } else if clarion_channels::revocation::in_utterance(&message.body).is_some() {
        Some(InboundRevocation::Words)
    } else {
        None
    }
}
