//! Provider encounters whose report is overdue: read back, bounded in concurrency and time,
//! off the due loop; SMS conversations time out.

use super::*;

/// How an overdue provider encounter ends.
#[derive(Debug, Clone, Copy)]
pub(super) enum OverdueEnd<'a> {
    /// An SMS conversation whose contact went quiet for the template's SMS timeout:
    /// `conversation-timeout`, as no reply at all or as unresolved after some.
    ConversationTimeout,
    /// A call whose report never came (and which could not be read back): `failed`, with
    /// `summary` saying why; it is never placed again.
    UnreportedCall { summary: &'a str },
}

/// How long one pass over overdue provider encounters may go on starting read-backs; what
/// is left waits for the next pass.
pub(super) const OVERDUE_PASS_BUDGET: Duration = Duration::from_secs(30);

impl Scheduler {
    /// Provider encounters whose time is up with no outcome: a Vapi call whose end-of-call
    /// report is overdue is read back with `GET /call/{id}` (an ended call is applied as if
    /// its report had arrived; one still running, or unreadable, is looked at again after
    /// `provider_report_timeout`); a call whose placement is unknown is looked for among the
    /// calls placed from Clarion's number; an SMS conversation times out. Answers the number
    /// of encounters ended.
    ///
    /// Provider reads go `PROVIDER_REQUESTS_IN_FLIGHT` at a time, and none is started once
    /// `OVERDUE_PASS_BUDGET` has passed (the rest wait for the next pass). This runs off the
    /// loop that wakes sequences ([`Scheduler::run`]), so a slow provider delays only its
    /// own read-backs, never another sequence's due step.
    pub async fn settle_overdue_provider_encounters(&self) -> Result<usize, SchedulerError> {
        let now = self.inner.clock.now_millis();
        let overdue = self
            .inner
            .store
            .overdue_provider_encounters(now, self.inner.config.batch_size)
            .await?;
        let deadline = tokio::time::Instant::now() + OVERDUE_PASS_BUDGET;
        let outcomes: Vec<Result<bool, SchedulerError>> = futures::stream::iter(overdue)
            .map(|encounter| async move {
                if tokio::time::Instant::now() >= deadline {
                    return Ok(false);
                }
                self.settle_overdue(&encounter, now).await
            })
            .buffer_unordered(PROVIDER_REQUESTS_IN_FLIGHT)
            .collect()
            .await;
        let mut ended = 0;
        for outcome in outcomes {
            match outcome {
                Ok(true) => ended += 1,
                Ok(false) => {}
                Err(SchedulerError::Store(error)) => return Err(error.into()),
                Err(error) => {
                    tracing::error!(error = %error, "settling an overdue provider encounter failed");
                }
            }
        }
        Ok(ended)
    }

    /// Settles one overdue provider encounter (see
    /// [`Scheduler::settle_overdue_provider_encounters`]); answers whether it ended.
    #[tracing::instrument(level = "debug", name = "overdue_encounter", skip_all, fields(encounter_id = encounter.id.0))]
    pub(super) async fn settle_overdue(
        &self,
        encounter: &EncounterRow,
        now: Millis,
    ) -> Result<bool, SchedulerError> {
        self.provider_of_open(encounter)
            .settle_overdue(self, encounter, now)
            .await
    }

    /// Ends an open provider encounter that is overdue (re-read in the transaction: a
    /// callback may have ended it meanwhile, then this changes nothing and answers `false`).
    pub(super) async fn end_overdue(
        &self,
        encounter: &EncounterRow,
        end: OverdueEnd<'_>,
    ) -> Result<bool, SchedulerError> {
        let now = self.inner.clock.now_millis();
        let mut tx = WriteTx::begin(&self.inner).await?;
        let Some(current) = self
            .inner
            .store
            .overdue_open_encounter(&mut tx.tx, encounter.id, now)
            .await?
        else {
            return Ok(false);
        };
        match end {
            OverdueEnd::ConversationTimeout => {
                let conversation = Self::conversation_of(&current);
                let end = if conversation.replies() == 0 {
                    SmsEnd::NoReply
                } else {
                    SmsEnd::TurnLimit
                };
                self.end_conversation(&mut tx, &current, &conversation, end, now)
                    .await?;
            }
            OverdueEnd::UnreportedCall { summary } => {
                tracing::warn!(
                    encounter_id = current.id.0,
                    "no report of the call came; ending it as failed"
                );
                let report = crate::simulator::failed_call_report(&current, summary);
                self.finish_encounter(&mut tx, &current, "failed", Some(&report), now, now)
                    .await?;
            }
        }
        self.commit_callback(tx).await?;
        Ok(true)
    }
}
