//! The pre-contact eligibility check: an organisation with an eligibility hook is asked,
//! just before each call attempt and each conversation's first text (provider encounters: in
//! the provider worker before the claim; simulated ones: before they are run), whether the
//! patient is still to be contacted. The question is HTTP, so it is asked outside any
//! transaction; the at-most-once contact guarantee stays with the claim (two nodes may both
//! ask; only one claims, and a "no" never withdraws an encounter another node claimed).
//!
//! A "no" (or an error, under the default `on_error`) withdraws the encounter in one
//! transaction, nobody contacted, and gives the engine [`Event::Ineligible`]: the step is
//! skipped or the sequence ends, with the hook's reason in the sequence's events only (it may
//! name the patient: it is never logged).

use super::*;

use crate::eligibility::{HookSettings, OnError};
use clarion_delivery::eligibility::EligibilityClient;
use clarion_engine::EligibilityAction;
use clarion_webhooks::{EligibilityRequest, IneligibleAction, OutreachType, Secret};

/// An organisation's hook, ready to ask.
#[derive(Debug)]
pub(super) struct Hook {
    /// `None` when the stored settings do not read (every check is then an error).
    settings: Option<HookSettings>,
    /// `None` when the secret does not open (every check is then an error).
    secret: Option<Secret>,
}

/// The hook's "no" for one encounter. `Debug` leaves out the reason, which may name the
/// patient's circumstances.
#[derive(Clone)]
pub(super) struct Ineligible {
    action: EligibilityAction,
    reason: Option<String>,
}

impl std::fmt::Debug for Ineligible {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ineligible")
            .field("action", &self.action)
            .finish_non_exhaustive()
    }
}

impl Ineligible {
    fn event(&self) -> Event {
        Event::Ineligible {
            action: self.action,
            reason: self.reason.clone(),
        }
    }
}

/// The client that asks hooks, under the deployment's SSRF policy. A client that cannot be
/// built (no TLS backend) leaves every check an error, which the default policy treats as
/// "not eligible": never a silent "yes".
pub(super) fn eligibility_client(
    policy: clarion_delivery::ssrf::SsrfPolicy,
) -> Option<EligibilityClient> {
    EligibilityClient::new(policy)
        .map_err(|error| tracing::error!(%error, "the eligibility hook client could not be built"))
        .ok()
}

impl Scheduler {
    /// An organisation's eligibility hook (cached for [`ORG_RULES_TTL`], like its calling
    /// rules; a change made through this node applies at once).
    async fn organization_hook(&self, org: OrgId) -> Result<Option<Arc<Hook>>, SchedulerError> {
        if let Some(hook) = self.inner.org_hooks.fresh(org) {
            return Ok(hook);
        }
        let hook = self.inner.store.eligibility_hook(org).await?.map(|row| {
            Arc::new(Hook {
                settings: HookSettings::stored(&row.settings),
                secret: row.secret.and_then(|secret| secret.parse().ok()),
            })
        });
        self.inner.org_hooks.insert(org, hook.clone());
        Ok(hook)
    }

    /// Asks the organisation's hook about one encounter of a running sequence: `None` when the
    /// patient may be contacted (no hook, "eligible", or an error under `on_error:
    /// eligible`). Counted in `clarion_eligibility_checks_total{answer}`.
    pub(super) async fn eligibility(
        &self,
        encounter: &EncounterRow,
        sequence: &SequenceRow,
    ) -> Result<Option<Ineligible>, SchedulerError> {
        if sequence.status != SequenceStatus::Active {
            // The claim's check withholds it anyway; the hook is not asked for nothing.
            return Ok(None);
        }
        let Some(hook) = self.organization_hook(sequence.org_id).await? else {
            return Ok(None);
        };
        let ids = self.inner.store.public_ids(sequence.org_id);
        let request = EligibilityRequest::new(
            ids.encode(IdKind::Sequence, sequence.id),
            // A contact that does not read is asked about without its external id (the
            // claim parks that sequence anyway); the hook is never skipped.
            contact_of(sequence).ok().and_then(|c| c.external_id),
            u32::try_from(encounter.step + 1).unwrap_or(u32::MAX),
            u32::try_from(encounter.attempt).unwrap_or(u32::MAX),
            match encounter.channel {
                Channel::Call => OutreachType::Call,
                Channel::Sms => OutreachType::Sms,
            },
        );
        let answer = match (&self.inner.eligibility, &hook.settings, &hook.secret) {
            (None, _, _) => Err("no-client"),
            (_, None, _) => Err("bad-settings"),
            (_, _, None) => Err("no-signing-secret"),
            (Some(client), Some(settings), Some(secret)) => {
                client
                    .check(&settings.url, secret, settings.timeout(), &request)
                    .await
            }
        };
        let on_error = hook
            .settings
            .as_ref()
            .map_or(OnError::NotEligible, |s| s.on_error);
        let (answer_label, verdict) = match answer {
            Ok(answer) if answer.eligible => ("eligible", None),
            Ok(answer) => (
                "not-eligible",
                Some(Ineligible {
                    action: match answer.action_or_default() {
                        IneligibleAction::SkipStep => EligibilityAction::SkipStep,
                        IneligibleAction::EndSequence => EligibilityAction::EndSequence,
                    },
                    reason: answer.trimmed_reason(),
                }),
            ),
            Err(class) => {
                tracing::warn!(
                    org_id = sequence.org_id.0,
                    sequence_id = sequence.id.0,
                    encounter_id = encounter.id.0,
                    error = class,
                    ?on_error,
                    "the eligibility hook could not be asked"
                );
                let verdict = (on_error == OnError::NotEligible).then(|| Ineligible {
                    action: EligibilityAction::SkipStep,
                    reason: Some(format!("hook-error: {class}")),
                });
                ("error", verdict)
            }
        };
        metrics::counter!("clarion_eligibility_checks_total", "answer" => answer_label)
            .increment(1);
        Ok(verdict)
    }

    /// The eligibility check before a provider encounter's claim: `true` when it may go on to
    /// the claim, `false` when the hook said no and the encounter was withdrawn.
    pub(super) async fn eligible_before_claim(
        &self,
        id: EncounterId,
    ) -> Result<bool, SchedulerError> {
        let store = &self.inner.store;
        let Some(encounter) = store.encounter_by_id(id).await? else {
            return Ok(true);
        };
        if encounter.status != EncounterStatus::Created || encounter.claimed_at.is_some() {
            // The claim decides (and refuses) this one.
            return Ok(true);
        }
        let Some(sequence) = store
            .get_sequence(encounter.org_id, encounter.sequence_id)
            .await?
        else {
            return Ok(true);
        };
        match self.eligibility(&encounter, &sequence).await? {
            None => Ok(true),
            Some(ineligible) => {
                self.withdraw_ineligible(id, &ineligible).await?;
                Ok(false)
            }
        }
    }

    /// Withdraws an encounter the hook said no to, in one transaction, if it is still
    /// unclaimed and not sent (a node whose hook said yes may have claimed it meanwhile: then
    /// it stands), and gives the engine the answer. Nobody was contacted.
    pub(super) async fn withdraw_ineligible(
        &self,
        id: EncounterId,
        ineligible: &Ineligible,
    ) -> Result<(), SchedulerError> {
        let store = &self.inner.store;
        let now = self.inner.clock.now_millis();
        let mut tx = WriteTx::begin(&self.inner).await?;
        let Some(encounter) = store.encounter_for_update(&mut tx.tx, id).await? else {
            return Ok(());
        };
        if encounter.status != EncounterStatus::Created || encounter.claimed_at.is_some() {
            return Ok(());
        }
        let sequence = tx.sequence_for_update(store, encounter.sequence_id).await?;
        self.not_contacted(
            &mut tx,
            &encounter,
            sequence.as_ref(),
            Some(&ineligible.event()),
            now,
        )
        .await?;
        tx.commit(store).await?;
        tracing::info!(
            encounter_id = id.0,
            sequence_id = encounter.sequence_id.0,
            "encounter withdrawn: the eligibility check said not to contact; nobody was contacted"
        );
        self.wake();
        Ok(())
    }
}
