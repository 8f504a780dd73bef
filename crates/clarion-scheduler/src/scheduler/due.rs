//! The due loop's work: wake due sequences, end due encounters, reconcile encounters whose
//! provider answer was never recorded. Database work only: no provider request is made here.

use super::*;

/// How many due sequences (or encounters) one pass of the scheduler takes on at most, the
/// earliest due first. A pass works through its window in id order, `batch_size` per
/// transaction: rows with neighbouring ids share database pages, so a transaction writes a
/// few dozen pages instead of one or two per row, which is what a burst of work (thousands of
/// sequences enrolled together, whose encounters end at scattered times) would otherwise
/// cost. Something that falls due during a pass waits for the next one, at most one window
/// later. 131,072 ids are 1 MiB.
pub(super) const DUE_WINDOW: u32 = 131_072;

impl Scheduler {
    /// The due loop's work: wakes due sequences, ends due encounters, reconciles
    /// unconfirmed ones, until nothing is due. No provider request is made here: encounters
    /// for Vapi and Twilio are left committed for the provider worker (tests use this to
    /// stand between the commit and the request).
    #[tracing::instrument(level = "debug", name = "scheduler_pass", skip_all)]
    pub async fn run_due_pass(&self) -> Result<usize, SchedulerError> {
        let mut total = 0;
        loop {
            let mut done = 0;
            done += self.wake_due_sequences().await?;
            done += self.end_due_encounters().await?;
            done += self.reconcile_unconfirmed().await?;
            total += done;
            if done == 0 {
                return Ok(total);
            }
        }
    }

    /// Wakes every sequence due now: the earliest-due window of them, in id order.
    pub(super) async fn wake_due_sequences(&self) -> Result<usize, SchedulerError> {
        let now = self.inner.clock.now_millis();
        let mut ids = self.inner.store.due_sequence_ids(now, DUE_WINDOW).await?;
        ids.sort_unstable();
        let mut done = 0;
        for batch in ids.chunks(self.batch_size()) {
            done += self.wake_sequences(batch).await?;
        }
        Ok(done)
    }

    /// Rows handled per transaction (`batch_size`, at least one). Each window of due ids is
    /// taken in id order, so concurrent writers lock rows in one order.
    fn batch_size(&self) -> usize {
        usize::try_from(self.inner.config.batch_size.max(1)).unwrap_or(usize::MAX)
    }

    /// Wakes those of the sequences `ids` still due, in one transaction.
    #[tracing::instrument(level = "debug", name = "wake_batch", skip_all, fields(batch = ids.len()))]
    pub(super) async fn wake_sequences(&self, ids: &[SequenceId]) -> Result<usize, SchedulerError> {
        let now = self.inner.clock.now_millis();
        let store = &self.inner.store;
        let mut tx = WriteTx::begin(&self.inner).await?;
        // Claimed for this transaction: no other claimer (connection, process, node) takes
        // them before it commits; what this transaction moves is no longer due after it.
        let due = store.claim_due_sequences(&mut tx.tx, ids, now).await?;
        let numbers: Vec<(OrgId, &str)> = due
            .iter()
            .map(|s| (s.org_id, s.phone_number.as_str()))
            .collect();
        let mut orgs: Vec<OrgId> = due.iter().map(|s| s.org_id).collect();
        orgs.sort_unstable_by_key(|o| o.0);
        orgs.dedup();
        let org_caps = store.organization_contact_caps(&mut tx.tx, &orgs).await?;
        let caps: Vec<Option<ContactCaps>> = due
            .iter()
            .map(|sequence| {
                let (per_day, per_week) =
                    org_caps.get(&sequence.org_id).copied().unwrap_or_default();
                ContactCaps::resolve(self.inner.config.contact_caps, per_day, per_week)
            })
            .collect();
        // The calling rules' attempt limits (e.g. three per 24 hours in Florida): for each
        // sequence, (index of the rule in its plan, limit).
        let mut rule_limits: Vec<Vec<(usize, u32)>> = Vec::with_capacity(due.len());
        for sequence in &due {
            // A contact that does not read must not stop the batch here: its transition
            // below fails on it too, and parks that one sequence.
            let Ok(contact) = contact_of(sequence) else {
                rule_limits.push(Vec::new());
                continue;
            };
            let rules = self.calling_rules(sequence.org_id, &contact).await?;
            rule_limits.push(
                rules
                    .iter()
                    .enumerate()
                    .filter_map(|(i, r)| r.max_attempts_per_24h.map(|limit| (i, limit)))
                    .collect(),
            );
        }
        // The cap check here is the only one before a contact: the capped numbers' locks
        // first, so no other transaction counts or adds their contacts until this commits.
        // (Suppression is read here too, but the last word before a real contact is the
        // provider claim's check, under the same lock; simulated encounters contact nobody.)
        let capped: Vec<(OrgId, &str)> = numbers
            .iter()
            .zip(caps.iter().zip(&rule_limits))
            .filter(|(_, (caps, limits))| caps.is_some() || !limits.is_empty())
            .map(|(number, _)| *number)
            .collect();
        store.lock_contacts(&mut tx.tx, &capped, now).await?;
        let suppressed_numbers = store.are_suppressed(&mut tx.tx, &numbers).await?;
        for (index, sequence) in due.iter().enumerate() {
            // A number suppressed by a transition earlier in this batch counts too.
            let suppressed = suppressed_numbers.get(index).copied().unwrap_or(false)
                || tx
                    .suppressed
                    .contains(&(sequence.org_id, sequence.phone_number.clone()));
            let caps = caps.get(index).copied().flatten();
            let cap = self.cap_allows_at(&mut tx, sequence, caps, now).await?;
            let limits = rule_limits.get(index).map_or(&[][..], Vec::as_slice);
            let rule_cap = self.rule_cap(&mut tx, sequence, limits, now).await?;
            let event = Event::Wake {
                suppressed,
                contact_cap_allows_at: cap.map(datetime),
                rule_cap,
            };
            // A bad row does not stop the batch: its transition parks it.
            self.transition(&mut tx, sequence, &event, now).await?;
        }
        let started = tx.commit(store).await?;
        if !started.is_empty() {
            crash_point("encounter-committed");
            self.request_encounters(started).await?;
        }
        Ok(due.len())
    }

    /// Ends every encounter whose end is known and due now: the earliest-due window of them,
    /// in id order.
    pub(super) async fn end_due_encounters(&self) -> Result<usize, SchedulerError> {
        let now = self.inner.clock.now_millis();
        let mut ids = self.inner.store.due_encounter_ids(now, DUE_WINDOW).await?;
        ids.sort_unstable();
        let mut done = 0;
        for batch in ids.chunks(self.batch_size()) {
            done += self.end_encounters(batch).await?;
        }
        Ok(done)
    }

    /// Ends those of the encounters `ids` still due, and moves their sequences on, in one
    /// transaction.
    #[tracing::instrument(level = "debug", name = "end_batch", skip_all, fields(batch = ids.len()))]
    pub(super) async fn end_encounters(
        &self,
        ids: &[EncounterId],
    ) -> Result<usize, SchedulerError> {
        let now = self.inner.clock.now_millis();
        let store = &self.inner.store;
        let mut tx = WriteTx::begin(&self.inner).await?;
        let due = store.due_encounters(&mut tx.tx, ids, now).await?;
        // The outcome and report object were stored when the encounter was requested; ending
        // it keeps that report (not read here).
        let ends: Vec<(&EncounterRow, String, Millis)> = due
            .iter()
            .map(|encounter| {
                let outcome = encounter
                    .outcome
                    .clone()
                    .unwrap_or_else(|| "failed".to_owned());
                (encounter, outcome, encounter.ends_at.unwrap_or(now))
            })
            .collect();
        let mut sequence_ids = HashSet::with_capacity(due.len());
        if due.iter().all(|e| sequence_ids.insert(e.sequence_id)) {
            // One encounter per sequence (the usual case): end them all in one statement and
            // read their sequences in one. No transition reads another sequence's encounters'
            // ends, so this is what ending and transitioning them one by one would do.
            let batch: Vec<EncounterEnd<'_>> = ends
                .iter()
                .map(|(e, outcome, at)| EncounterEnd {
                    id: e.id,
                    outcome: outcome.as_str(),
                    report: None,
                    ended_at: *at,
                })
                .collect();
            let ended = store.end_encounters(&mut tx.tx, &batch).await?;
            let ended_ids: Vec<SequenceId> = ends
                .iter()
                .zip(&ended)
                .filter(|(_, ended)| **ended)
                .map(|((e, ..), _)| e.sequence_id)
                .collect();
            let mut sequences: HashMap<SequenceId, SequenceRow> = store
                .sequences_for_update(&mut tx.tx, &ended_ids)
                .await?
                .into_iter()
                .map(|s| (s.id, s))
                .collect();
            for ((encounter, outcome, ended_at), ended) in ends.iter().zip(ended) {
                if !ended {
                    continue;
                }
                let Some(sequence) = sequences.remove(&encounter.sequence_id) else {
                    continue;
                };
                self.record_simulated_opt_out(&mut tx, encounter, outcome, now)
                    .await?;
                tx.encounter_ended(&sequence, encounter.id);
                self.encounter_ended(&mut tx, &sequence, outcome, *ended_at, now)
                    .await?;
            }
        } else {
            for (encounter, outcome, ended_at) in &ends {
                self.record_simulated_opt_out(&mut tx, encounter, outcome, now)
                    .await?;
                self.finish_encounter(&mut tx, encounter, outcome, None, *ended_at, now)
                    .await?;
            }
        }
        let started = tx.commit(store).await?;
        if !due.is_empty() {
            crash_point("encounter-ended");
            self.inner.outbox.wake();
        }
        if !started.is_empty() {
            self.request_encounters(started).await?;
        }
        Ok(due.len())
    }

    /// Encounters committed but never confirmed: the process died between committing the row
    /// (for a provider: claiming it) and recording the provider's answer. The provider may or
    /// may not have received the request, so it is never re-sent. A Vapi call is looked for
    /// instead: it becomes a call of unknown placement, due for a read-back at once (the calls
    /// placed from Clarion's number are listed and searched for its name), and its
    /// end-of-call report is still applied if it comes. Anything else ends as `failed`, and the
    /// sequence goes on by its rules.
    #[tracing::instrument(level = "debug", skip_all)]
    pub(super) async fn reconcile_unconfirmed(&self) -> Result<usize, SchedulerError> {
        let now = self.inner.clock.now_millis();
        let config = &self.inner.config;
        let window = Duration::try_from_secs_f64(
            config.reconcile_after.as_secs_f64() * config.time_scale.max(1.0),
        )
        .unwrap_or(Duration::MAX);
        let before =
            now.saturating_sub(Millis::try_from(window.as_millis()).unwrap_or(Millis::MAX));
        let channels = self.provider_channels();
        let stale = self
            .inner
            .store
            .unconfirmed_encounters(before, &channels, self.inner.config.batch_size)
            .await?;
        if stale.is_empty() {
            return Ok(0);
        }
        let mut tx = WriteTx::begin(&self.inner).await?;
        let mut unknown = Vec::new();
        for encounter in &stale {
            // Read again under the row's lock: the node that committed it may have recorded
            // its answer since the list was read (it rides out a database outage for up to
            // this same window). Only one still unconfirmed is reconciled; a recorded answer
            // is never overwritten with `failed`.
            let still_unconfirmed = self
                .inner
                .store
                .encounter_for_update(&mut tx.tx, encounter.id)
                .await?
                .is_some_and(|current| current.status == EncounterStatus::Created);
            if !still_unconfirmed {
                continue;
            }
            if let Unconfirmed::LookUp(provider_ref) =
                self.provider(encounter.channel).unconfirmed(encounter)
            {
                tracing::warn!(
                    encounter_id = encounter.id.0,
                    "encounter was claimed but its request never recorded; looking for it at the provider"
                );
                unknown.push(RequestedEncounter {
                    id: encounter.id,
                    provider_ref,
                    ends_at: Some(now),
                    report: None,
                    outcome: None,
                });
                continue;
            }
            tracing::warn!(
                encounter_id = encounter.id.0,
                "encounter was never confirmed by the provider; ending it as failed, not re-sending"
            );
            let from = encounter
                .caller_number
                .as_ref()
                .map_or(self.inner.config.clinic_number.as_str(), |c| {
                    c.number.as_str()
                });
            let report = crate::simulator::unknown_outcome_report(encounter, from);
            self.finish_encounter(&mut tx, encounter, "failed", Some(&report), now, now)
                .await?;
        }
        if !unknown.is_empty() {
            self.inner
                .store
                .mark_encounters_requested(&mut tx.tx, &unknown)
                .await?;
        }
        let started = tx.commit(&self.inner.store).await?;
        self.inner.outbox.wake();
        if !started.is_empty() {
            self.request_encounters(started).await?;
        }
        Ok(stale.len())
    }
}

impl Scheduler {
    /// For an encounter ending as an opt-out, records in its sequence's events why
    /// ([`due_opt_out_evidence`]). The due rows carry no report (reading them is the cost of
    /// every end), so only an opt-out's is read, in `tx`.
    async fn record_simulated_opt_out(
        &self,
        tx: &mut WriteTx,
        encounter: &EncounterRow,
        outcome: &str,
        now: Millis,
    ) -> Result<(), SchedulerError> {
        if outcome != "opt-out" {
            return Ok(());
        }
        let Some(stored) = self
            .inner
            .store
            .encounter_for_update(&mut tx.tx, encounter.id)
            .await?
        else {
            return Ok(());
        };
        if let Some(evidence) = due_opt_out_evidence(&stored) {
            Self::record_opt_out_evidence(tx, encounter, &evidence, now);
        }
        Ok(())
    }
}

/// Why an encounter whose known end is an opt-out is one. A text Twilio refused with error
/// 21610 (the recipient unsubscribed through the carrier: an opening text or the text after a
/// voicemail, never sent) says so by its provider reference. A simulated encounter's is read
/// from its stored report the way a provider's would be: the patient's lines of the
/// transcript — a STOP keyword (texts) or a revocation in words
/// ([`clarion_channels::revocation`]). `None` when neither says anything of it.
fn due_opt_out_evidence(
    encounter: &EncounterRow,
) -> Option<clarion_channels::revocation::Evidence> {
    let refused_by_carrier = encounter.channel == Channel::Sms
        && encounter
            .provider_ref
            .as_deref()
            .is_some_and(|r| r.starts_with(TWILIO_UNSENT_PREFIX));
    if refused_by_carrier {
        return Some(clarion_channels::revocation::Evidence {
            source: "carrier",
            detail: clarion_providers::twilio::wire::ERROR_OPTED_OUT.to_string(),
        });
    }
    simulated_opt_out_evidence(encounter)
}

/// [`due_opt_out_evidence`] for a simulated encounter: read from its transcript.
fn simulated_opt_out_evidence(
    encounter: &EncounterRow,
) -> Option<clarion_channels::revocation::Evidence> {
    use clarion_channels::revocation::{Evidence, in_utterance};
    use clarion_providers::twilio::keywords::{Keyword, classify};

    let report: Value = serde_json::from_str(encounter.report.as_deref()?).ok()?;
    let transcript = report.get("transcript")?.as_str()?;
    let patient_lines = transcript
        .lines()
        .filter_map(|line| line.strip_prefix("User:"));
    patient_lines.map(str::trim).find_map(|said| {
        if encounter.channel == Channel::Sms && classify(said) == Keyword::OptOut {
            return Some(Evidence {
                source: "keyword",
                detail: "opt-out-keyword".to_owned(),
            });
        }
        in_utterance(said).map(|rule| Evidence {
            source: if encounter.channel == Channel::Sms {
                "phrase"
            } else {
                "transcript"
            },
            detail: rule.name.to_owned(),
        })
    })
}
