//! The engine hand-off: applying an event to a sequence inside a transaction and performing
//! the actions (history, suppression, encounter rows, the report into the outbox); the API
//! controls (cancel, pause, resume); an ended encounter fed back to the engine.

use super::*;

impl Scheduler {
    /// Cancel, pause or resume.
    pub async fn control(
        &self,
        org: OrgId,
        id: SequenceId,
        control: Control,
    ) -> Result<SequenceRow, SchedulerError> {
        let now = self.inner.clock.now_millis();
        let mut tx = WriteTx::begin(&self.inner).await?;
        let sequence = tx
            .sequence_for_update(&self.inner.store, id)
            .await?
            .filter(|s| s.org_id == org)
            .ok_or(SchedulerError::SequenceNotFound)?;
        if sequence.status == SequenceStatus::Ended {
            return Err(SchedulerError::Ended);
        }
        let event = match control {
            Control::Cancel => Event::Cancel,
            Control::Pause => Event::Pause,
            Control::Resume => Event::Resume,
        };
        if control == Control::Cancel {
            self.close_open_encounters(&mut tx, &sequence, now).await?;
        }
        self.transition(&mut tx, &sequence, &event, now).await?;
        tx.wake_workers();
        tx.commit(&self.inner.store).await?;
        self.inner.outbox.wake();
        self.wake();
        self.inner
            .store
            .get_sequence(org, id)
            .await?
            .ok_or(SchedulerError::SequenceNotFound)
    }

    /// A cancel closes what its sequence still has open, before the report is built: an
    /// encounter committed but not yet claimed for its provider is withdrawn (it never went
    /// out, and now never will); an SMS conversation open with Twilio ends (the patient's
    /// next text is no longer answered; a STOP still suppresses). A call in progress is left
    /// to end: it cannot be unsaid, and its outcome still counts for suppression.
    pub(super) async fn close_open_encounters(
        &self,
        tx: &mut WriteTx,
        sequence: &SequenceRow,
        now: Millis,
    ) -> Result<(), SchedulerError> {
        let store = &self.inner.store;
        let withdrawn = store
            .withdraw_unclaimed_encounters(&mut tx.tx, sequence.id)
            .await?;
        for encounter_id in withdrawn {
            tracing::info!(
                encounter_id = encounter_id.0,
                sequence_id = sequence.id.0,
                "cancelled before its provider request; withdrawn"
            );
        }
        for encounter in store
            .open_encounters_of_sequence(&mut tx.tx, sequence.id)
            .await?
        {
            let open_conversation = encounter.channel == Channel::Sms
                && encounter.status == EncounterStatus::Requested
                && encounter.outcome.is_none();
            if !open_conversation {
                continue;
            }
            let conversation = Self::conversation_of(&encounter);
            let report = self.conversation_report(&encounter, &conversation, SmsEnd::Error, now);
            let mut report =
                serde_json::to_value(&report).map_err(|_| SchedulerError::Corrupt("sms"))?;
            // Not an error of the channel: the organisation closed it.
            report["ended_reason"] = Value::String("unknown".to_owned());
            if store
                .end_encounter(&mut tx.tx, encounter.id, "unresolved", Some(&report), now)
                .await?
            {
                tx.encounter_ended(sequence, encounter.id);
            }
        }
        Ok(())
    }

    /// Applies one event to a sequence inside `tx` and performs the resulting actions.
    /// The encounters it starts are inserted with the transaction's buffered writes, and
    /// answered by [`WriteTx::commit`] (the provider is asked after commit).
    pub(super) async fn transition(
        &self,
        tx: &mut WriteTx,
        sequence: &SequenceRow,
        event: &Event,
        now: Millis,
    ) -> Result<(), SchedulerError> {
        let (plan, state) = match self.plan_and_state(sequence).await {
            Ok(read) => read,
            // A control through the API (cancel, pause, resume; an erasure's cancel) fails
            // loudly instead: answering it as done would leave the caller believing the
            // sequence ended, or its PHI erased.
            Err(error)
                if error.is_row_fault()
                    && !matches!(event, Event::Cancel | Event::Pause | Event::Resume) =>
            {
                return self.park(tx, sequence, &error, Some(event), now).await;
            }
            Err(error) => return Err(error),
        };
        let Transition { state, actions } =
            clarion_engine::step(&plan, &state, event, datetime(now));
        if actions.is_empty() && state.next_wake.map(millis) == sequence.next_wake_at {
            return Ok(());
        }
        self.perform(tx, sequence, &state, &actions, now).await
    }

    /// The plan a sequence runs under and its engine state, as stored.
    pub(super) async fn plan_and_state(
        &self,
        sequence: &SequenceRow,
    ) -> Result<(Plan, SequenceState), SchedulerError> {
        let plan = self.plan_of(sequence).await?;
        let state =
            serde_json::from_str(&sequence.state).map_err(|_| SchedulerError::Corrupt("state"))?;
        Ok((plan, state))
    }

    /// A sequence whose row cannot run (its plan or its state does not read: a template
    /// version gone, a corrupt contact or state): paused, with a `parked` entry in its events
    /// saying why, in `tx`. So one bad row never fails the batch it is in, which its loop
    /// would otherwise retry, and fail, forever, holding up every other row of the batch.
    /// The `event` it could not take still counts where it is an opt-out: an opt-out
    /// suppresses the number whatever state its sequence is in.
    pub(super) async fn park(
        &self,
        tx: &mut WriteTx,
        sequence: &SequenceRow,
        error: &SchedulerError,
        event: Option<&Event>,
        now: Millis,
    ) -> Result<(), SchedulerError> {
        if let Some(Event::EncounterEnded {
            outcome: clarion_engine::EncounterOutcome::OptOut,
            ..
        }) = event
        {
            self.suppress_opted_out(tx, sequence, now).await?;
        }
        if sequence.status == SequenceStatus::Ended {
            // Over already (its report queued): a late event changes nothing else, and the
            // sequence is not brought back as paused.
            tracing::error!(sequence_id = sequence.id.0, error = %error, "an ended sequence's row does not read; the late event is ignored");
            return Ok(());
        }
        tracing::error!(sequence_id = sequence.id.0, error = %error, "sequence cannot run; parked");
        let update = PendingUpdate {
            id: sequence.id,
            status: SequenceStatus::Paused,
            state: sequence.state.clone(),
            next_wake_at: None,
            outcome_description: None,
            now,
        };
        tx.update(&self.inner.store, update).await?;
        tx.record(
            sequence.id,
            now,
            "parked".to_owned(),
            json!({ "reason": error.to_string() }),
        );
        Ok(())
    }

    /// Puts the sequence's number on its organisation's suppression list (an opt-out), in
    /// `tx`, and remembers it for the rest of the batch.
    async fn suppress_opted_out(
        &self,
        tx: &mut WriteTx,
        sequence: &SequenceRow,
        now: Millis,
    ) -> Result<(), SchedulerError> {
        self.inner
            .store
            .suppress(
                &mut tx.tx,
                sequence.org_id,
                &sequence.phone_number,
                "opt-out",
                now,
            )
            .await?;
        tx.suppressed
            .insert((sequence.org_id, sequence.phone_number.clone()));
        Ok(())
    }

    /// Stores the new state and performs the engine's actions, in `tx`.
    pub(super) async fn perform(
        &self,
        tx: &mut WriteTx,
        sequence: &SequenceRow,
        state: &SequenceState,
        actions: &[Action],
        now: Millis,
    ) -> Result<(), SchedulerError> {
        let store = &self.inner.store;
        let mut ended = false;
        for action in actions {
            match action {
                Action::Record(note) => {
                    let detail = serde_json::to_value(note).unwrap_or(Value::Null);
                    tx.record(sequence.id, now, note_kind(note), detail);
                }
                Action::SuppressNumber => self.suppress_opted_out(tx, sequence, now).await?,
                Action::StartEncounter {
                    step,
                    attempt,
                    channel,
                    assistant_id,
                } => {
                    let step = i64::try_from(*step).unwrap_or(i64::MAX);
                    let attempt = i64::from(*attempt);
                    tx.encounters.push(Started {
                        encounter: EncounterRow {
                            id: EncounterId(0),
                            org_id: sequence.org_id,
                            sequence_id: sequence.id,
                            step,
                            attempt,
                            channel: *channel,
                            assistant_id: AssistantId(*assistant_id),
                            phone_number: sequence.phone_number.clone(),
                            status: EncounterStatus::Created,
                            provider_ref: None,
                            provider_status: None,
                            conversation: None,
                            outcome: None,
                            report: None,
                            ends_at: None,
                            created_at: now,
                            ended_at: None,
                            claimed_at: None,
                            sender: None,
                            caller_number: None,
                        },
                        ordinal: 0,
                        sequence: sequence.clone(),
                    });
                }
                Action::End => ended = true,
            }
        }
        let state_text =
            serde_json::to_string(state).map_err(|_| SchedulerError::Corrupt("state"))?;
        let update = PendingUpdate {
            id: sequence.id,
            status: state.status,
            state: state_text,
            next_wake_at: state.next_wake.map(millis),
            outcome_description: state.outcome_description.clone(),
            now,
        };
        tx.update(store, update).await?;
        if ended {
            // The report is built and queued when the buffer is written, before commit.
            let mut row = sequence.clone();
            row.status = SequenceStatus::Ended;
            row.outcome_description = state.outcome_description.clone();
            tx.ending.push((row, now));
        }
        Ok(())
    }

    /// Commits `tx` after a provider callback changed an encounter, and lets the rest run.
    pub(super) async fn commit_callback(&self, mut tx: WriteTx) -> Result<(), SchedulerError> {
        tx.wake_workers();
        let started = tx.commit(&self.inner.store).await?;
        self.inner.outbox.wake();
        self.wake();
        if !started.is_empty() {
            self.request_encounters(started).await?;
        }
        Ok(())
    }

    /// Records in the sequence's events why an encounter counts as an opt-out (kind
    /// `opt-out-detected`: where it was found and which rule, key or keyword matched; never
    /// the patient's words), just before the encounter's end is applied.
    pub(super) fn record_opt_out_evidence(
        tx: &mut WriteTx,
        encounter: &EncounterRow,
        evidence: &clarion_channels::revocation::Evidence,
        now: Millis,
    ) {
        let channel = match encounter.channel {
            Channel::Call => "call",
            _ => "sms",
        };
        tx.record(
            encounter.sequence_id,
            now,
            "opt-out-detected".to_owned(),
            serde_json::json!({
                "type": "opt-out-detected",
                "step": encounter.step,
                "attempt": encounter.attempt,
                "channel": channel,
                "source": evidence.source,
                "matched": evidence.detail,
            }),
        );
    }

    /// Ends an encounter and feeds its outcome to the engine, in `tx`.
    pub(super) async fn finish_encounter(
        &self,
        tx: &mut WriteTx,
        encounter: &EncounterRow,
        outcome: &str,
        report: Option<&Value>,
        ended_at: Millis,
        now: Millis,
    ) -> Result<(), SchedulerError> {
        let store = &self.inner.store;
        if !store
            .end_encounter(&mut tx.tx, encounter.id, outcome, report, ended_at)
            .await?
        {
            return Ok(());
        }
        let Some(sequence) = tx.sequence_for_update(store, encounter.sequence_id).await? else {
            return Ok(());
        };
        tx.encounter_ended(&sequence, encounter.id);
        self.encounter_ended(tx, &sequence, outcome, ended_at, now)
            .await?;
        if sequence.phi_purged_at.is_some() {
            // A provider's late answer for a sequence whose PHI was already purged (a call
            // still running when its number was erased or its retention ran out): what it
            // brought (the transcript, the encounter.ended event it queued) is purged too,
            // before anything commits.
            tx.flush(store).await?;
            self.purge_in(tx, &[sequence.id], false, PurgeReason::LateReport, now)
                .await?;
        }
        Ok(())
    }

    /// Feeds an ended encounter's outcome to the engine, in `tx`.
    pub(super) async fn encounter_ended(
        &self,
        tx: &mut WriteTx,
        sequence: &SequenceRow,
        outcome: &str,
        ended_at: Millis,
        now: Millis,
    ) -> Result<(), SchedulerError> {
        let outcome = serde_json::from_value(Value::String(outcome.to_owned()))
            .unwrap_or(clarion_engine::EncounterOutcome::Failed);
        let event = Event::EncounterEnded {
            outcome,
            ended_at: datetime(ended_at),
        };
        // The encounters it started carry the sequence as read here: the simulator uses only
        // what never changes (contact, variables, simulation), not the engine's state.
        self.transition(tx, sequence, &event, now).await
    }
}
