//! PHI retention and erasure: the retention job (ended sequences past their organisation's
//! period) and a contact's erasure (`DELETE /v1/contacts/{phone_number}`), both in batches of
//! [`PHI_BATCH`] sequences per transaction, so that a purge of millions of rows never holds
//! the writer long. What is purged is the store's list (`clarion_store::Store::purge_phi`).

use super::*;

/// Sequences purged per transaction.
pub const PHI_BATCH: u32 = 500;

/// How often (real time) `run` looks for sequences past their retention period.
pub const RETENTION_EVERY: Duration = Duration::from_secs(300);

/// What an erasure did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Erasure {
    /// Running sequences of the number cancelled first (`cancel=true`).
    pub cancelled: u64,
    /// Ended sequences whose PHI was erased (the cancelled ones included).
    pub sequences: u64,
    /// Their encounters.
    pub encounters: u64,
    /// Their stored report bodies (and other message bodies) rewritten without PHI.
    pub report_bodies: u64,
}

/// The answer to an erasure request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EraseOutcome {
    /// Done.
    Erased(Erasure),
    /// Refused: this many sequences of the number are running (active or paused) and the
    /// request did not ask to cancel them. Nothing was changed.
    Running(u64),
}

/// Why a sequence's PHI went, in its history (`phi-purged`).
#[derive(Debug, Clone, Copy)]
pub(super) enum PurgeReason {
    Retention,
    Erasure,
    /// A provider's answer that arrived after the sequence's PHI was purged.
    LateReport,
}

impl PurgeReason {
    fn as_str(self) -> &'static str {
        match self {
            Self::Retention => "retention",
            Self::Erasure => "erasure",
            Self::LateReport => "late-report",
        }
    }
}

impl Scheduler {
    /// Purges the PHI of every ended sequence past its organisation's retention period, in
    /// batches, until none is left; answers how many sequences. Safe on several nodes at
    /// once: each batch takes its rows under a lock that another node's skips.
    pub async fn purge_expired_phi(&self) -> Result<u64, SchedulerError> {
        let store = &self.inner.store;
        let mut total = 0;
        loop {
            let now = self.inner.clock.now_millis();
            let ids = store
                .phi_purge_candidates(&PhiSelection::Expired { now }, PHI_BATCH)
                .await?;
            if ids.is_empty() {
                return Ok(total);
            }
            let mut tx = WriteTx::begin(&self.inner).await?;
            let purged = self
                .purge_in(&mut tx, &ids, true, PurgeReason::Retention, now)
                .await?;
            tx.commit(store).await?;
            let count = u64::try_from(purged.sequences.len()).unwrap_or(u64::MAX);
            metrics::counter!("clarion_phi_purged_sequences_total", "reason" => "retention")
                .increment(count);
            total += count;
            if purged.sequences.is_empty() {
                // Every candidate was taken by another node meanwhile: it purges them.
                return Ok(total);
            }
        }
    }

    /// Erases the PHI of every sequence of `phone_number` in the organisation (a patient's
    /// right-of-erasure request). Refused while one of them runs, unless `cancel`: then each
    /// running one is cancelled through the usual cancel (its report queued) and erased in
    /// the same transaction, so its report is never queued with PHI. The suppression list is
    /// left alone (an opt-out outlives the erasure).
    pub async fn erase_contact(
        &self,
        org: OrgId,
        phone_number: &str,
        cancel: bool,
    ) -> Result<EraseOutcome, SchedulerError> {
        let store = &self.inner.store;
        let running = self.running_sequences_of(org, phone_number).await?;
        if !running.is_empty() && !cancel {
            return Ok(EraseOutcome::Running(
                u64::try_from(running.len()).unwrap_or(u64::MAX),
            ));
        }
        let mut erasure = Erasure::default();
        for id in running {
            let now = self.inner.clock.now_millis();
            let mut tx = WriteTx::begin(&self.inner).await?;
            let Some(sequence) = tx
                .sequence_for_update(store, id)
                .await?
                .filter(|s| s.org_id == org && s.status != SequenceStatus::Ended)
            else {
                continue;
            };
            self.close_open_encounters(&mut tx, &sequence, now).await?;
            self.transition(&mut tx, &sequence, &Event::Cancel, now)
                .await?;
            // The end and its report written, then purged before anything commits.
            tx.flush(store).await?;
            let purged = self
                .purge_in(&mut tx, &[id], false, PurgeReason::Erasure, now)
                .await?;
            tx.wake_workers();
            tx.commit(store).await?;
            erasure.cancelled += 1;
            add(&mut erasure, &purged);
        }
        self.inner.outbox.wake();
        self.wake();
        // Then every ended sequence of the number, in id order (those just cancelled again:
        // idempotent, and it keeps the answer a count of the number's sequences).
        erasure.sequences = 0;
        erasure.encounters = 0;
        erasure.report_bodies = 0;
        let mut after = None;
        loop {
            let selection = PhiSelection::Contact {
                org,
                phone_number,
                after,
            };
            let ids = store.phi_purge_candidates(&selection, PHI_BATCH).await?;
            let Some(last) = ids.last().copied() else {
                break;
            };
            after = Some(last);
            let now = self.inner.clock.now_millis();
            let mut tx = WriteTx::begin(&self.inner).await?;
            let purged = self
                .purge_in(&mut tx, &ids, false, PurgeReason::Erasure, now)
                .await?;
            tx.commit(store).await?;
            add(&mut erasure, &purged);
        }
        metrics::counter!("clarion_phi_purged_sequences_total", "reason" => "erasure")
            .increment(erasure.sequences);
        Ok(EraseOutcome::Erased(erasure))
    }

    /// The organisation's active and paused sequences of a number.
    async fn running_sequences_of(
        &self,
        org: OrgId,
        phone_number: &str,
    ) -> Result<Vec<SequenceId>, SchedulerError> {
        let mut ids = Vec::new();
        for status in [SequenceStatus::Active, SequenceStatus::Paused] {
            let mut after = None;
            loop {
                let filter = clarion_store::SequenceFilter {
                    status: Some(status),
                    phone_number: Some(phone_number.to_owned()),
                    ..clarion_store::SequenceFilter::default()
                };
                let page = self
                    .inner
                    .store
                    .search_sequences(org, &filter, after, PHI_BATCH)
                    .await?;
                let Some(last) = page.last() else { break };
                after = Some(last.id);
                ids.extend(page.iter().map(|s| s.id));
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// Purges `ids` in the transaction and records a `phi-purged` history entry on each
    /// sequence purged.
    pub(super) async fn purge_in(
        &self,
        tx: &mut WriteTx,
        ids: &[SequenceId],
        only_unpurged: bool,
        reason: PurgeReason,
        now: Millis,
    ) -> Result<PhiPurged, SchedulerError> {
        let purged = self
            .inner
            .store
            .purge_phi(&mut tx.tx, ids, only_unpurged, now)
            .await?;
        for id in &purged.sequences {
            tx.record(
                *id,
                now,
                "phi-purged".to_owned(),
                json!({ "reason": reason.as_str() }),
            );
        }
        Ok(purged)
    }

    /// The retention job's loop: a pass at start and every [`RETENTION_EVERY`].
    pub(super) async fn retention_loop(&self, mut stopped: tokio::sync::watch::Receiver<bool>) {
        while !*stopped.borrow() {
            match self.purge_expired_phi().await {
                Ok(0) => {}
                Ok(purged) => tracing::info!(
                    purged,
                    "purged the PHI of sequences past their retention period"
                ),
                Err(error) => tracing::warn!(
                    error = %clarion_store::retry::error_chain(&error),
                    "the retention job's pass failed; trying again at the next"
                ),
            }
            tokio::select! {
                _ = stopped.changed() => {}
                () = tokio::time::sleep(RETENTION_EVERY) => {}
            }
        }
    }
}

fn add(erasure: &mut Erasure, purged: &PhiPurged) {
    erasure.sequences += u64::try_from(purged.sequences.len()).unwrap_or(u64::MAX);
    erasure.encounters += purged.encounters;
    erasure.report_bodies += purged.report_bodies;
}
