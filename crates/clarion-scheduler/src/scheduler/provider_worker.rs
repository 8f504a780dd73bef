//! The provider worker and the contact check: encounters committed for a provider that
//! contacts the patient (Vapi, Twilio: [`Provider::contacts_patient`]) are claimed, one by
//! one, in a short transaction that checks again that contact is allowed, then handed to
//! their provider ([`Provider::request`]); the simulator's encounters are run at once after
//! their commit.

use super::*;

/// Requests to Vapi or Twilio in flight at once when a batch starts several encounters.
/// Each is an HTTP round trip of a few hundred milliseconds: one at a time, a batch of 512
/// calls would take minutes to place. Both providers rate-limit per account (Vapi also caps
/// concurrent calls), and a 429 is retried, so a handful in flight is the useful range.
pub(super) const PROVIDER_REQUESTS_IN_FLIGHT: usize = 8;

/// How many queued provider encounters the provider worker reads at a time.
pub(super) const PROVIDER_QUEUE_BATCH: u32 = 64;

/// What the check before a retry said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Recheck {
    /// Contact is still allowed: try again.
    Allowed,
    /// Not any more: the encounter was withheld, nothing to record.
    Withheld,
    /// The check could not be made: do not send, end the encounter as not sent.
    Failed,
}

/// Whether `encounter` is the sequence's current (step, attempt): the one its state waits for.
fn is_current_attempt(encounter: &EncounterRow, state: &SequenceState) -> bool {
    usize::try_from(encounter.step).ok() == Some(state.step)
        && i64::from(state.attempt) == encounter.attempt
}

/// Which claim [`Scheduler::claim_for_request`] makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Claim {
    /// The first request: the encounter must be unclaimed, and is claimed.
    First,
    /// Another try after the provider certainly did not take it (a 429): the encounter must
    /// still be claimed and not requested; the check is made again.
    Retry,
}

impl Scheduler {
    /// Hands committed encounters on: the simulator's are run now (it already knows how each
    /// encounter will go) and recorded in one transaction; those for Vapi or Twilio wait in
    /// the database for the provider worker ([`Scheduler::place_claimable`]), which claims
    /// each in the transaction just before its request. So the loop that wakes sequences
    /// never waits on a provider.
    pub(super) async fn request_encounters(
        &self,
        started: Vec<Started>,
    ) -> Result<(), SchedulerError> {
        let (with_provider, simulated): (Vec<Started>, Vec<Started>) = started
            .into_iter()
            .partition(|started| self.provider(started.encounter.channel).contacts_patient());
        if !with_provider.is_empty() {
            self.inner.provider_wake.notify_one();
        }
        // The organisations' eligibility hooks first (HTTP, outside any transaction; a few
        // at a time): a "no" withdraws the encounter before it is run.
        let checked: Vec<(Started, Result<Option<Ineligible>, SchedulerError>)> =
            futures::stream::iter(simulated)
                .map(|started| async move {
                    let verdict = self
                        .eligibility(&started.encounter, &started.sequence)
                        .await;
                    (started, verdict)
                })
                .buffered(PROVIDER_REQUESTS_IN_FLIGHT)
                .collect()
                .await;
        let mut simulated = Vec::with_capacity(checked.len());
        for (started, verdict) in checked {
            let id = started.encounter.id;
            match verdict {
                Ok(None) => simulated.push(started),
                Ok(Some(ineligible)) => {
                    if let Err(error) = self.withdraw_ineligible(id, &ineligible).await {
                        tracing::error!(encounter_id = id.0, error = %error, "withdrawing an encounter the eligibility check refused failed");
                    }
                }
                Err(error) => {
                    tracing::error!(encounter_id = id.0, error = %error, "the eligibility check of a simulated encounter failed");
                }
            }
        }
        if simulated.is_empty() {
            return Ok(());
        }
        // Each (organisation, channel)'s caller numbers are locked in that order, the same on
        // every node, so two nodes' batches never wait on each other's locks in a cycle.
        simulated.sort_by_key(|started| (started.sequence.org_id, started.encounter.channel));
        let now = self.inner.clock.now_millis();
        self.record_riding_out_outages(|| self.record_simulated(&simulated, now))
            .await?;
        crash_point("encounter-requested");
        Ok(())
    }

    /// Runs the simulator for `simulated` and records the batch in one transaction: each
    /// encounter's caller number, its simulated end, or its deferral when every number is at
    /// its cap. Run again from the start if the database went away before the commit; an
    /// encounter recorded already (the commit went through, its answer was lost) is left as
    /// it is, as every write here applies only to an encounter still `created`.
    async fn record_simulated(
        &self,
        simulated: &[Started],
        now: Millis,
    ) -> Result<(), SchedulerError> {
        let store = &self.inner.store;
        let mut tx = WriteTx::begin(&self.inner).await?;
        // Each (organisation, channel)'s caller numbers, read and locked once for the batch;
        // each choice is then counted here as it is made.
        let mut numbers: HashMap<(OrgId, Channel), Vec<clarion_store::CallerNumberUses>> =
            HashMap::new();
        let mut requested = Vec::with_capacity(simulated.len());
        for started in simulated {
            let mut started = started.clone();
            let encounter_id = started.encounter.id;
            let key = (started.sequence.org_id, started.encounter.channel);
            let pool = match numbers.entry(key) {
                std::collections::hash_map::Entry::Occupied(known) => known.into_mut(),
                std::collections::hash_map::Entry::Vacant(vacant) => {
                    let since = cap_window_start(now);
                    let read = store
                        .caller_numbers_for_choice(&mut tx.tx, key.0, key.1, encounter_id, since)
                        .await?;
                    vacant.insert(read)
                }
            };
            match choose(pool, &started.encounter.phone_number, now) {
                CallerChoice::Configured => {}
                CallerChoice::Use(number) => {
                    store
                        .record_caller_number_choice(&mut tx.tx, encounter_id, &number, now)
                        .await?;
                    started.encounter.caller_number = Some(chosen(&number));
                    if let Some(entry) = pool.iter_mut().find(|e| e.number.id == number.id) {
                        entry.uses.push(now);
                        entry.number.last_chosen_at = Some(now);
                    }
                }
                CallerChoice::AtCap { until } => {
                    if self
                        .defer_simulated_for_cap(&mut tx, &started, until, now)
                        .await?
                    {
                        continue;
                    }
                }
            }
            match self.simulate(&started).await {
                Ok((ends_at, outcome, report)) => requested.push(RequestedEncounter {
                    id: encounter_id,
                    provider_ref: format!("sim_{encounter_id}"),
                    ends_at: Some(ends_at),
                    report: Some(report),
                    outcome: Some(outcome),
                }),
                Err(error) => {
                    tracing::error!(encounter_id = encounter_id.0, error = %error, "starting a simulated encounter failed");
                }
            }
        }
        crash_point("provider-asked");
        store
            .mark_encounters_requested(&mut tx.tx, &requested)
            .await?;
        crate::fault::outage_point("recording-answer")?;
        tx.commit(store).await?;
        Ok(())
    }

    /// Runs `record` (one transaction recording what a provider answered, or what the
    /// simulator decided) until it commits. The answer exists only in this process's memory:
    /// lost, its encounter could only be reconciled (looked up at Vapi, else ended `failed`
    /// and never sent again). So a database that went away meanwhile (a restart, a failover,
    /// killed connections) is waited out, with backoff, for up to `reconcile_after`, after
    /// which the reconciler of any node takes the encounter over. A commit that went through
    /// although its answer was lost is harmless to repeat: an encounter is marked requested,
    /// and given its caller number, only while it is still `created`.
    pub(super) async fn record_riding_out_outages<F, Fut>(
        &self,
        mut record: F,
    ) -> Result<(), SchedulerError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<(), SchedulerError>>,
    {
        let give_up = std::time::Instant::now() + self.inner.config.reconcile_after;
        let mut backoff = clarion_store::retry::Backoff::default();
        let mut failures: u32 = 0;
        loop {
            match record().await {
                Err(error) if error.is_transient() => {
                    let now = std::time::Instant::now();
                    if now >= give_up {
                        return Err(error);
                    }
                    failures += 1;
                    if failures == 1 {
                        tracing::warn!(
                            error = %clarion_store::retry::error_chain(&error),
                            "the database went away while an answer was being recorded; trying again"
                        );
                    }
                    tokio::time::sleep(backoff.next_delay().min(give_up - now)).await;
                }
                Ok(()) if failures > 0 => {
                    tracing::info!(failures, "answer recorded once the database answered again");
                    return Ok(());
                }
                other => return other,
            }
        }
    }

    /// A simulated encounter for which every caller number is at its cap: as at a claim, the
    /// row goes and the engine defers the attempt (`caller-number-cap`), in the transaction
    /// that records the batch. `false` (simulate it as usual) when its sequence has moved on
    /// meanwhile (a cancel): the engine ignores that encounter's end anyway.
    async fn defer_simulated_for_cap(
        &self,
        tx: &mut WriteTx,
        started: &Started,
        until: Millis,
        now: Millis,
    ) -> Result<bool, SchedulerError> {
        let store = &self.inner.store;
        let encounter = &started.encounter;
        let Some(sequence) = tx.sequence_for_update(store, encounter.sequence_id).await? else {
            return Ok(false);
        };
        // A state that does not read: simulated as usual, and parked when its end is fed to
        // the engine, rather than failing the whole batch here.
        let Ok(state) = serde_json::from_str::<SequenceState>(&sequence.state) else {
            return Ok(false);
        };
        let this_attempt =
            is_current_attempt(encounter, &state) && sequence.status == SequenceStatus::Active;
        if !this_attempt || !store.withdraw_encounter(&mut tx.tx, encounter.id).await? {
            return Ok(false);
        }
        let event = Event::CallerNumbersAtCap {
            until: datetime(until),
        };
        self.transition(tx, &sequence, &event, now).await?;
        count_cap_deferral(encounter.channel);
        Ok(true)
    }

    /// The provider worker's pass: encounters committed for Vapi or Twilio and not yet
    /// claimed are claimed (the contact check, in its own transaction) and sent, up to
    /// `PROVIDER_REQUESTS_IN_FLIGHT` at a time, each answer recorded as it comes — as many as
    /// the providers' capacity allows ([`Scheduler::choose_queued`]: free call slots, each
    /// sender's pace, fair shares over organisations); the rest wait, recorded. Answers how
    /// many were taken on. Also what a restart resumes: the queue is the `created`, unclaimed
    /// rows, so nothing committed is forgotten.
    pub async fn place_claimable(&self) -> Result<usize, SchedulerError> {
        Ok(self.place_claimable_pass().await?.0)
    }

    /// [`Scheduler::place_claimable`], also answering when a text held back by its sender's
    /// pace may go, and when calls are tried again after Vapi refused one for lack of a slot
    /// (the worker wakes then).
    pub(super) async fn place_claimable_pass(&self) -> Result<(usize, Chosen), SchedulerError> {
        let channels = self.provider_channels();
        let mut seen = HashSet::new();
        let mut taken = 0;
        let mut waits = Chosen::default();
        loop {
            // An id seen before in this pass was taken on already (claimed, withheld, or its
            // transaction failed); it waits for the next pass instead of spinning here.
            let mut fresh = Vec::new();
            for channel in &channels {
                let chosen = self.choose_queued(*channel, &seen).await?;
                waits.paced_until = chosen.paced_until.or(waits.paced_until);
                waits.retry_at = chosen.retry_at.or(waits.retry_at);
                fresh.extend(chosen.take);
            }
            if fresh.is_empty() {
                return Ok((taken, waits));
            }
            seen.extend(fresh.iter().copied());
            taken += fresh.len();
            // Every request in flight finishes and is recorded before an error is answered:
            // an answer dropped half-way would leave a placed call unrecorded.
            let outcomes: Vec<Result<(), SchedulerError>> = futures::stream::iter(fresh)
                .map(|id| async move { self.send_to_provider(id).await })
                .buffer_unordered(PROVIDER_REQUESTS_IN_FLIGHT)
                .collect()
                .await;
            for outcome in outcomes {
                if let Err(error) = outcome {
                    tracing::error!(error = %error, "a provider request could not be made or recorded");
                }
            }
        }
    }

    /// Claims one committed encounter and, if the contact check allows it, sends it to its
    /// provider and records the answer.
    #[tracing::instrument(level = "debug", name = "provider_request", skip_all, fields(encounter_id = id.0))]
    pub(super) async fn send_to_provider(&self, id: EncounterId) -> Result<(), SchedulerError> {
        if !self.eligible_before_claim(id).await? {
            return Ok(());
        }
        let Some(started) = self.claim_for_request(id, Claim::First).await? else {
            return Ok(());
        };
        crash_point("encounter-claimed");
        self.provider(started.encounter.channel)
            .request(self, &started)
            .await
    }

    /// The contact check again after waiting to retry a request the provider certainly did
    /// not take (a 429): Vapi's and Twilio's retry loops call this before every retry.
    pub(super) async fn recheck_before_retry(&self, id: EncounterId) -> Recheck {
        match self.claim_for_request(id, Claim::Retry).await {
            Ok(Some(_)) => Recheck::Allowed,
            Ok(None) => Recheck::Withheld,
            Err(error) => {
                tracing::error!(encounter_id = id.0, error = %error, "re-checking a request before its retry failed; not sending it");
                Recheck::Failed
            }
        }
    }

    /// The last word before contact, in one short transaction: the encounter is still
    /// `created` (and, for a first request, unclaimed: nobody else sends it; for a retry,
    /// claimed by this request), its sequence is running and still in that encounter, the
    /// number is not suppressed and the contact's calling window is open
    /// ([`clarion_engine::contact_check`]). Then the claim is committed and the request may
    /// go out. Otherwise nobody was contacted: the encounter row is removed and the engine
    /// puts the attempt back (a closed window becomes a deferral; a suppressed number ends
    /// the sequence), and `None` is answered.
    pub(super) async fn claim_for_request(
        &self,
        id: EncounterId,
        claim: Claim,
    ) -> Result<Option<Started>, SchedulerError> {
        let store = &self.inner.store;
        let now = self.inner.clock.now_millis();
        let mut tx = WriteTx::begin(&self.inner).await?;
        let Some(mut encounter) = store.encounter_for_update(&mut tx.tx, id).await? else {
            return Ok(None);
        };
        let ours = match claim {
            Claim::First => encounter.claimed_at.is_none(),
            Claim::Retry => encounter.claimed_at.is_some(),
        };
        if encounter.status != EncounterStatus::Created || !ours {
            return Ok(None);
        }
        let Some(sequence) = tx.sequence_for_update(store, encounter.sequence_id).await? else {
            self.not_contacted(&mut tx, &encounter, None, None, now)
                .await?;
            tx.commit(store).await?;
            return Ok(None);
        };
        // The number's lock before its suppression check: an opt-out (which takes it too)
        // never commits between this check and the claim below.
        store
            .lock_contacts(
                &mut tx.tx,
                &[(sequence.org_id, sequence.phone_number.as_str())],
                now,
            )
            .await?;
        let suppressed = store
            .is_suppressed(&mut tx.tx, sequence.org_id, &sequence.phone_number)
            .await?;
        let (plan, state) = match self.plan_and_state(&sequence).await {
            Ok(read) => read,
            Err(error) if error.is_row_fault() => {
                // A row that cannot run: nobody is contacted, and the encounter never holds
                // the queue (or its sender's pace) again. It goes and the sequence is
                // parked; for a sequence that ended meanwhile (a cancel), whose queued report
                // may name it, it stays, ended as not sent.
                if sequence.status == SequenceStatus::Ended {
                    self.not_contacted(&mut tx, &encounter, Some(&sequence), None, now)
                        .await?;
                } else {
                    self.park(&mut tx, &sequence, &error, None, now).await?;
                    store.withdraw_encounter(&mut tx.tx, encounter.id).await?;
                }
                tx.commit(store).await?;
                return Ok(None);
            }
            Err(error) => return Err(error),
        };
        let this_attempt = is_current_attempt(&encounter, &state);
        let check = if this_attempt {
            clarion_engine::contact_check(&plan, &state, suppressed, datetime(now))
        } else {
            Err(clarion_engine::Withheld::NotRunning)
        };
        match check {
            Ok(()) => {
                if claim == Claim::First && !self.slot_free(&mut tx.tx, encounter.channel).await? {
                    // Every slot was taken meanwhile (another request, another node): it
                    // stays queued, unclaimed, and waits.
                    return Ok(None);
                }
                if claim == Claim::First {
                    // The number it goes out from, under the lock of the organisation's
                    // numbers: a retry keeps the number its first claim chose.
                    let choice = self
                        .choose_caller_number(&mut tx.tx, &encounter, sequence.org_id, now)
                        .await?;
                    if let CallerChoice::AtCap { until } = choice {
                        return self
                            .defer_for_caller_number_cap(tx, &encounter, &sequence, until, now)
                            .await;
                    }
                    if !store.claim_encounter(&mut tx.tx, id, now).await? {
                        return Ok(None);
                    }
                    if let CallerChoice::Use(number) = choice {
                        store
                            .record_caller_number_choice(&mut tx.tx, id, &number, now)
                            .await?;
                        encounter.caller_number = Some(chosen(&number));
                    }
                    self.provider(encounter.channel)
                        .on_claim(store, &mut tx.tx, &encounter)
                        .await?;
                }
                tx.commit(store).await?;
                Ok(Some(Started {
                    encounter,
                    ordinal: 0,
                    sequence,
                }))
            }
            Err(reason) => {
                tracing::info!(
                    encounter_id = id.0,
                    sequence_id = sequence.id.0,
                    reason = ?reason,
                    "encounter withheld just before its provider request; nobody was contacted"
                );
                // The attempt runs again when allowed.
                let event = Event::EncounterWithheld { reason };
                self.not_contacted(&mut tx, &encounter, Some(&sequence), Some(&event), now)
                    .await?;
                tx.commit(store).await?;
                self.wake();
                Ok(None)
            }
        }
    }

    /// Every caller number of the organisation for the encounter's channel is at its daily
    /// cap: nobody is contacted; the row goes and the engine defers the attempt until the
    /// first number frees up (`caller-number-cap` in the sequence's events).
    async fn defer_for_caller_number_cap(
        &self,
        mut tx: WriteTx,
        encounter: &EncounterRow,
        sequence: &SequenceRow,
        until: Millis,
        now: Millis,
    ) -> Result<Option<Started>, SchedulerError> {
        let store = &self.inner.store;
        store.withdraw_encounter(&mut tx.tx, encounter.id).await?;
        let event = Event::CallerNumbersAtCap {
            until: datetime(until),
        };
        self.transition(&mut tx, sequence, &event, now).await?;
        tx.commit(store).await?;
        tracing::info!(
            encounter_id = encounter.id.0,
            sequence_id = sequence.id.0,
            "every caller number is at its daily cap; nobody was contacted, the attempt waits"
        );
        count_cap_deferral(encounter.channel);
        self.wake();
        Ok(None)
    }

    /// An encounter that was not handed to its provider (withheld by the contact check, or
    /// refused by the eligibility hook), in `tx`; nobody was contacted. For a sequence that
    /// has ended meanwhile (a cancel), whose report is queued and may name this encounter, the
    /// row stays, ended as a call or text that was not made. Otherwise the row goes, and the
    /// engine gets `event` if the sequence is still in that encounter.
    pub(super) async fn not_contacted(
        &self,
        tx: &mut WriteTx,
        encounter: &EncounterRow,
        sequence: Option<&SequenceRow>,
        event: Option<&Event>,
        now: Millis,
    ) -> Result<(), SchedulerError> {
        let store = &self.inner.store;
        let Some(sequence) = sequence else {
            store.withdraw_encounter(&mut tx.tx, encounter.id).await?;
            return Ok(());
        };
        if sequence.status == SequenceStatus::Ended {
            let report = self
                .provider_of_open(encounter)
                .not_contacted_report(self, encounter, now);
            store
                .end_encounter(&mut tx.tx, encounter.id, "failed", Some(&report), now)
                .await?;
            return Ok(());
        }
        store.withdraw_encounter(&mut tx.tx, encounter.id).await?;
        // A state that does not read takes no event here; the sequence's next one parks it.
        if let Some(event) = event
            && let Ok(state) = serde_json::from_str::<SequenceState>(&sequence.state)
            && is_current_attempt(encounter, &state)
        {
            self.transition(tx, sequence, event, now).await?;
        }
        Ok(())
    }

    /// Whether a first claim on `channel` may take a provider slot, counted in the claim's
    /// transaction (so concurrent claimers, on this node or another, never take more than
    /// there are): only Vapi calls have slots.
    async fn slot_free(&self, tx: &mut Tx, channel: Channel) -> Result<bool, SchedulerError> {
        if !matches!(self.provider(channel), Provider::Vapi(Some(_))) {
            return Ok(true);
        }
        let in_use = self.inner.store.provider_slots_in_use(tx, channel).await?;
        Ok(in_use < self.inner.config.limits.call_slots())
    }

    /// Records one provider's answer for an encounter (and a conversation's state), at once.
    pub(super) async fn record_requested(
        &self,
        request: RequestedEncounter,
        conversation: Option<String>,
    ) -> Result<(), SchedulerError> {
        self.record_riding_out_outages(|| self.record_requested_once(&request, &conversation))
            .await?;
        // A reply that overtook this record may be waiting for it.
        self.inner.sms_recorded.notify_waiters();
        Ok(())
    }

    /// [`Scheduler::record_requested`]'s transaction. The conversation is saved only with the
    /// mark: were this a second try after a commit whose answer was lost, a reply may have
    /// moved the conversation on since, and it is kept.
    async fn record_requested_once(
        &self,
        request: &RequestedEncounter,
        conversation: &Option<String>,
    ) -> Result<(), SchedulerError> {
        let store = &self.inner.store;
        let mut tx = store.begin().await?;
        let marked = store
            .mark_encounters_requested(&mut tx, std::slice::from_ref(request))
            .await?;
        if let (1, Some(conversation), Some(ends_at)) = (marked, conversation, request.ends_at) {
            store
                .save_conversation(&mut tx, request.id, conversation, ends_at)
                .await?;
        }
        crate::fault::outage_point("recording-answer")?;
        tx.commit().await?;
        Ok(())
    }

    /// Runs the simulator for one encounter: (ends_at, outcome, report object).
    pub(super) async fn simulate(
        &self,
        started: &Started,
    ) -> Result<(Millis, String, String), SchedulerError> {
        let Started {
            encounter,
            ordinal,
            sequence,
        } = started;
        let definition = self.definition(sequence.template_version_id).await?;
        // The caller number chosen for it, else the simulator's one number.
        let from = encounter
            .caller_number
            .as_ref()
            .map_or(self.inner.config.clinic_number.as_str(), |c| {
                c.number.as_str()
            });
        if let Some(text) = definition.voicemail_text(encounter.step, encounter.channel) {
            // The text after a voicemail is "sent" at once, whatever the script says: it
            // takes no scripted outcome.
            let report = crate::report::voicemail_text_report(
                encounter,
                text,
                Some(from),
                None,
                encounter.created_at,
            );
            let report = serde_json::to_string(&report)
                .map_err(|_| SchedulerError::Corrupt("voicemail text report"))?;
            return Ok((encounter.created_at, VOICEMAIL_TEXT_SENT.to_owned(), report));
        }
        let assistant = self
            .assistant(sequence.org_id, encounter.assistant_id)
            .await?;
        // The scripted outcomes are one per encounter, texts after a voicemail left out.
        let texts_before = if definition
            .steps
            .iter()
            .any(|s| s.voicemail.sms_text.is_some())
        {
            self.inner
                .store
                .sequence_encounters(sequence.id)
                .await?
                .iter()
                .filter(|e| {
                    (e.step, e.attempt) < (encounter.step, encounter.attempt)
                        && definition.voicemail_text(e.step, e.channel).is_some()
                })
                .count()
        } else {
            0
        };
        crate::simulator::simulate(
            sequence,
            encounter,
            ordinal.saturating_sub(texts_before),
            &assistant,
            from,
            &definition,
        )
    }
}
