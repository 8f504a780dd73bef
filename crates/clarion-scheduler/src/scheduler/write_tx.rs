//! A write transaction with the writes it buffers (history, sequence updates, encounter
//! inserts, reports into the outbox), each kind written as one statement before it is read
//! back and before commit.

use super::*;

/// A write transaction with the writes it buffers: history entries and sequence updates are
/// written in one statement each (every statement is a round trip to SQLite's thread), when a
/// buffered sequence is read again and before the transaction commits. So they still commit
/// atomically with the rest of the transaction.
#[derive(Debug)]
pub(super) struct WriteTx {
    pub(super) tx: Tx,
    pub(super) events: Vec<NewSequenceEvent>,
    pub(super) updates: Vec<PendingUpdate>,
    pub(super) updated: HashSet<SequenceId>,
    /// A buffered update ends a sequence (frees its number for a new enrollment).
    pub(super) ends: bool,
    /// Numbers suppressed in this transaction (for answers read before it started).
    pub(super) suppressed: HashSet<(OrgId, String)>,
    /// Encounters to insert (their id is not known yet).
    pub(super) encounters: Vec<Started>,
    /// Encounters inserted, for the provider once the transaction is committed.
    pub(super) started: Vec<Started>,
    /// Sequences ended in this transaction (as ended, with the engine time of the end),
    /// whose reports go into the outbox when the buffer is written: one read of their
    /// encounters and one outbox write for all of them.
    pub(super) ending: Vec<(SequenceRow, Millis)>,
    /// Encounters ended in this transaction (organisation, sequence, encounter), in the order
    /// they ended: their `encounter.ended` events go into the outbox when the buffer is
    /// written, before any report of their sequences (which takes over their objects).
    pub(super) ended_encounters: Vec<(OrgId, SequenceId, EncounterId)>,
    /// Reports written into the outbox by this transaction (for the metric, at commit).
    pub(super) reports_queued: u64,
    pub(super) outbox: Outbox,
    /// Real time, for the outbox.
    pub(super) real_clock: Arc<dyn Clock>,
}

#[derive(Debug)]
pub(super) struct PendingUpdate {
    pub(super) id: SequenceId,
    pub(super) status: SequenceStatus,
    pub(super) state: String,
    pub(super) next_wake_at: Option<Millis>,
    pub(super) outcome_description: Option<String>,
    pub(super) now: Millis,
}

impl WriteTx {
    pub(super) async fn begin(inner: &Inner) -> Result<Self, StoreError> {
        Ok(Self {
            tx: inner.store.begin().await?,
            ending: Vec::new(),
            ended_encounters: Vec::new(),
            reports_queued: 0,
            outbox: inner.outbox.clone(),
            real_clock: inner.real_clock.clone(),
            events: Vec::new(),
            updates: Vec::new(),
            updated: HashSet::new(),
            ends: false,
            suppressed: HashSet::new(),
            encounters: Vec::new(),
            started: Vec::new(),
        })
    }

    pub(super) fn record(
        &mut self,
        sequence_id: SequenceId,
        at: Millis,
        kind: String,
        detail: Value,
    ) {
        self.events.push(NewSequenceEvent {
            sequence_id,
            at,
            kind,
            detail,
        });
    }

    pub(super) async fn update(
        &mut self,
        store: &Store,
        update: PendingUpdate,
    ) -> Result<(), StoreError> {
        if self.updated.contains(&update.id) {
            self.flush(store).await?;
        }
        self.updated.insert(update.id);
        self.ends |= update.status == SequenceStatus::Ended;
        self.updates.push(update);
        Ok(())
    }

    /// Writes what is buffered.
    pub(super) async fn flush(&mut self, store: &Store) -> Result<(), StoreError> {
        let encounters = std::mem::take(&mut self.encounters);
        let rows: Vec<&EncounterRow> = encounters.iter().map(|s| &s.encounter).collect();
        let inserted = store.insert_encounters(&mut self.tx, &rows).await?;
        for (mut started, inserted) in encounters.into_iter().zip(inserted) {
            match inserted {
                Some(inserted) => {
                    started.encounter.id = inserted.id;
                    started.ordinal = usize::try_from(inserted.ordinal).unwrap_or(usize::MAX);
                    self.started.push(started);
                }
                None => tracing::warn!(
                    sequence_id = started.sequence.id.0,
                    step = started.encounter.step,
                    attempt = started.encounter.attempt,
                    "encounter for this step attempt exists already; not starting it again"
                ),
            }
        }
        store
            .add_sequence_events(&mut self.tx, &self.events)
            .await?;
        self.events.clear();
        let updates: Vec<(SequenceId, SequenceUpdate<'_>)> = self
            .updates
            .iter()
            .map(|u| {
                (
                    u.id,
                    SequenceUpdate {
                        status: u.status,
                        state: &u.state,
                        next_wake_at: u.next_wake_at,
                        outcome_description: u.outcome_description.as_deref(),
                        now: u.now,
                    },
                )
            })
            .collect();
        store.update_sequences(&mut self.tx, &updates).await?;
        self.updates.clear();
        self.updated.clear();
        self.ends = false;
        self.enqueue_encounter_events(store).await?;
        self.enqueue_reports(store).await
    }

    /// Records that an encounter ended in this transaction (call it before the engine's
    /// transition, which may end the sequence): its `encounter.ended` event is queued with
    /// the buffered writes, if its organisation has an endpoint subscribed to it.
    pub(super) fn encounter_ended(&mut self, sequence: &SequenceRow, encounter: EncounterId) {
        self.ended_encounters
            .push((sequence.org_id, sequence.id, encounter));
    }

    /// The `encounter.ended` events of the encounters ended since the last flush, into the
    /// outbox: nothing is read or built unless the organisation subscribes (one indexed read
    /// of its endpoints), then each event is the encounter's report entry as the report will
    /// carry it.
    async fn enqueue_encounter_events(&mut self, store: &Store) -> Result<(), StoreError> {
        if self.ended_encounters.is_empty() {
            return Ok(());
        }
        let ended = std::mem::take(&mut self.ended_encounters);
        let mut orgs: Vec<OrgId> = ended.iter().map(|(org, ..)| *org).collect();
        orgs.sort_unstable_by_key(|org| org.0);
        orgs.dedup();
        let subscribed = store
            .subscribed_organizations(
                &mut self.tx,
                &orgs,
                clarion_webhooks::EVENT_TYPE_ENCOUNTER_ENDED,
            )
            .await?;
        if subscribed.is_empty() {
            return Ok(());
        }
        let ended: Vec<(OrgId, SequenceId, EncounterId)> = ended
            .into_iter()
            .filter(|(org, ..)| subscribed.contains(org))
            .collect();
        let mut sequences: Vec<SequenceId> = ended.iter().map(|(_, id, _)| *id).collect();
        sequences.sort_unstable_by_key(|id| id.0);
        sequences.dedup();
        let encounters = store
            .encounters_of_sequences_tx(&mut self.tx, &sequences)
            .await?;
        let events: Vec<(OrgId, SequenceId, clarion_webhooks::EncounterEnded)> = ended
            .iter()
            .filter_map(|(org, sequence, encounter)| {
                let row = encounters
                    .get(sequence)?
                    .iter()
                    .find(|row| row.id == *encounter)?;
                let ids = store.public_ids(*org);
                let entry = crate::report::outreach_entry(&ids, row)?;
                let event = clarion_webhooks::EncounterEnded::new(
                    ids.encode(clarion_store::IdKind::Sequence, *sequence),
                    entry,
                );
                Some((*org, *sequence, event))
            })
            .collect();
        self.outbox
            .enqueue_events(
                &mut self.tx,
                clarion_webhooks::EVENT_TYPE_ENCOUNTER_ENDED,
                &events,
                self.real_clock.now_millis(),
            )
            .await?;
        Ok(())
    }

    /// The reports of the sequences ended since the last flush, built from the encounters as
    /// this transaction left them, into the outbox.
    pub(super) async fn enqueue_reports(&mut self, store: &Store) -> Result<(), StoreError> {
        if self.ending.is_empty() {
            return Ok(());
        }
        let ending = std::mem::take(&mut self.ending);
        let ids: Vec<SequenceId> = ending.iter().map(|(row, _)| row.id).collect();
        let mut encounters = store.encounters_of_sequences_tx(&mut self.tx, &ids).await?;
        let reports: Vec<(OrgId, clarion_webhooks::SequenceReport)> = ending
            .iter()
            .map(|(row, at)| {
                let encounters = encounters.remove(&row.id).unwrap_or_default();
                let ids = store.public_ids(row.org_id);
                (row.org_id, build_report(&ids, row, &encounters, *at))
            })
            .collect();
        let reports: Vec<(OrgId, &clarion_webhooks::SequenceReport)> =
            reports.iter().map(|(org, report)| (*org, report)).collect();
        self.outbox
            .enqueue_reports(&mut self.tx, &reports, self.real_clock.now_millis())
            .await?;
        self.reports_queued += u64::try_from(reports.len()).unwrap_or(u64::MAX);
        Ok(())
    }

    /// A sequence read to change it, after any buffered update of it.
    pub(super) async fn sequence_for_update(
        &mut self,
        store: &Store,
        id: SequenceId,
    ) -> Result<Option<SequenceRow>, StoreError> {
        if self.updated.contains(&id) {
            self.flush(store).await?;
        }
        store.sequence_for_update(&mut self.tx, id).await
    }

    /// Asks every node's scheduler loops to look again once this commits: for the
    /// transactions of the API and of provider callbacks, whose work (a sequence due, an
    /// encounter for a provider, a wake-up moved earlier) a worker node carries out. This
    /// node's own loops are woken in memory ([`Scheduler::wake`]).
    pub(super) fn wake_workers(&mut self) {
        self.tx.wake_nodes(clarion_store::Wakeup::Scheduler);
    }

    /// Commits; answers the encounters started (committed rows: the provider may be asked).
    pub(super) async fn commit(mut self, store: &Store) -> Result<Vec<Started>, StoreError> {
        self.flush(store).await?;
        self.tx.commit().await?;
        // This node's share of the work (several nodes on one database each count their own).
        for started in &self.started {
            metrics::counter!(
                "clarion_encounters_started_total",
                "channel" => started.encounter.channel.as_str()
            )
            .increment(1);
        }
        metrics::counter!("clarion_sequences_ended_total").increment(self.reports_queued);
        Ok(self.started)
    }
}

/// An encounter committed in a transaction, with what the simulator needs to run it once
/// the transaction is committed (so nothing is read back).
#[derive(Debug, Clone)]
pub(super) struct Started {
    /// The row as committed (status `created`).
    pub(super) encounter: EncounterRow,
    /// Its index among the sequence's encounters in (step, attempt) order.
    pub(super) ordinal: usize,
    pub(super) sequence: SequenceRow,
}
