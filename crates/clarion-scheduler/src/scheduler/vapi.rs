//! Calls through Vapi: placing a claimed call (retries re-checked), applying end-of-call
//! reports (by the recorded call id; by the call's name only once Vapi confirms it), status
//! updates, and finding a call whose placement was never recorded.

use super::*;
use clarion_providers::vapi::wire::VapiCall;

/// How many times a call Vapi certainly did not place (429, connection refused) is tried.
pub(super) const VAPI_PLACE_ATTEMPTS: u32 = 3;

/// The longest wait between two of those tries, whatever `Retry-After` says: the encounter
/// row stays unconfirmed meanwhile.
pub(super) const VAPI_MAX_RETRY_WAIT: Duration = Duration::from_secs(10);

/// The provider reference of a call whose placement is unknown (no call id came back).
pub(super) const VAPI_UNKNOWN_PREFIX: &str = "vapi_unknown_";

/// Vapi call statuses in the order a call goes through them (`ended` comes with the
/// end-of-call report).
pub(super) const VAPI_STATUS_ORDER: [&str; 4] = ["queued", "ringing", "in-progress", "forwarding"];

/// The summary of a call whose placement stayed unknown and whose report never came.
pub(super) const UNKNOWN_PLACEMENT_SUMMARY: &str = "Whether the call was placed is unknown (the provider \
     did not answer clearly) and no report of it came; it was not placed again.";

/// The summary of a call whose placement was unknown and which Vapi does not list among the
/// calls placed from Clarion's number.
pub(super) const NOT_PLACED_SUMMARY: &str = "The provider's answer did not say whether the call was \
     placed, and the provider has no record of it: it was not placed, and not placed again.";

/// The summary of a placed call that was neither reported nor readable until Clarion gave up.
pub(super) const NEVER_REPORTED_SUMMARY: &str = "The call was placed but its end was never reported and \
     could not be read back from the provider; it was not placed again.";

/// How many calls one `GET /call` listing asks for when looking for an unrecorded call.
pub(super) const VAPI_LIST_LIMIT: u32 = 100;

/// The Vapi phoneNumberId a call goes out from: its caller number's, chosen at the claim,
/// else the configured `[vapi] phone_number_id`.
pub(super) fn caller_phone_number_id<'a>(
    vapi: &'a VapiClient,
    encounter: &'a EncounterRow,
) -> &'a str {
    encounter
        .caller_number
        .as_ref()
        .and_then(|c| c.provider_id.as_deref())
        .unwrap_or(vapi.phone_number_id())
}

impl Scheduler {
    /// Places the call of one claimed encounter and records Vapi's answer at once, in its
    /// own small transaction: the call's callbacks (an end-of-call report) may arrive while
    /// other requests are still being sent, and must find the encounter.
    pub(super) async fn request_vapi_call(
        &self,
        vapi: &VapiClient,
        started: &Started,
    ) -> Result<(), SchedulerError> {
        let Some((request, status)) = self.place_vapi_call(vapi, started).await else {
            return Ok(());
        };
        crash_point("vapi-call-placed");
        let call_id = request.provider_ref.clone();
        self.record_requested(request, None).await?;
        if let Some(status) = status {
            // The status Vapi answered with (`queued`), unless a callback moved it on.
            self.inner
                .store
                .set_provider_status(Channel::Call, &call_id, &status, &VAPI_STATUS_ORDER)
                .await?;
        }
        Ok(())
    }

    /// Places one committed call encounter with Vapi. Answers what to record: the call's id
    /// (its end arrives as a callback) with the status Vapi gave the new call, or, when the
    /// call was not placed, an encounter due to end now as `failed`. Only answers that prove
    /// Vapi did not place the call are retried.
    ///
    /// Before each retry the contact check is made again ([`Scheduler::claim_for_request`]):
    /// a cancel, a pause, an opt-out or the window closing during the wait places nothing
    /// (`None`: the encounter was withheld, nothing to record).
    pub(super) async fn place_vapi_call(
        &self,
        vapi: &VapiClient,
        started: &Started,
    ) -> Option<(RequestedEncounter, Option<String>)> {
        let encounter = &started.encounter;
        let id = encounter.id;
        let not_placed = |reason: &str| {
            let report = crate::simulator::failed_call_report(
                encounter,
                &format!("The call could not be placed: {reason}. It was not retried."),
            );
            let request = RequestedEncounter {
                id,
                provider_ref: format!("vapi_unplaced_{id}"),
                ends_at: Some(self.inner.clock.now_millis()),
                report: Some(report.to_string()),
                outcome: Some("failed".to_owned()),
            };
            Some((request, None))
        };
        let assistant = match self
            .assistant(started.sequence.org_id, encounter.assistant_id)
            .await
        {
            Ok(assistant) => assistant,
            Err(error) => {
                tracing::error!(encounter_id = id.0, error = %error, "assistant unreadable; call not placed");
                return not_placed("the assistant could not be read");
            }
        };
        let Some(vapi_assistant) = assistant
            .config
            .get("vapi_assistant_id")
            .and_then(Value::as_str)
        else {
            tracing::warn!(
                encounter_id = id.0,
                "assistant has no vapi_assistant_id; call not placed"
            );
            return not_placed("the assistant has no vapi_assistant_id");
        };
        // The operator's allow-list, read again at call time: an id taken off it after the
        // assistant was created is not called.
        let org = started.sequence.org_id;
        if !matches!(
            self.inner
                .store
                .vapi_assistant_allowed(org, vapi_assistant)
                .await,
            Ok(true)
        ) {
            tracing::warn!(
                encounter_id = id.0,
                "Vapi assistant not on the organisation's allow-list; call not placed"
            );
            return not_placed("the Vapi assistant is not enabled for the organisation");
        }
        let variables = started
            .sequence
            .variables
            .as_object()
            .cloned()
            .unwrap_or_default();
        let mut request = CreateCallRequest::new(
            vapi_assistant,
            caller_phone_number_id(vapi, encounter),
            encounter.phone_number.as_str(),
            id.0,
            variables,
        );
        match self
            .voicemail_action(started.sequence.template_version_id, encounter.step)
            .await
        {
            Ok(None) => {}
            Ok(Some(VoicemailActionDefinition::LeaveMessage(text))) => {
                request = request.on_voicemail(Some(text));
            }
            Ok(Some(VoicemailActionDefinition::HangUp)) => request = request.on_voicemail(None),
            Err(error) => {
                tracing::error!(encounter_id = id.0, error = %error, "template unreadable; call not placed");
                return not_placed("the template could not be read");
            }
        }
        let mut tries = 1;
        loop {
            match vapi.create_call(&request).await {
                Ok(call) => {
                    tracing::info!(encounter_id = id.0, "call placed with Vapi");
                    // Due for a read-back if the end-of-call report does not come.
                    let check_at = self.inner.clock.now_millis().saturating_add(
                        Millis::try_from(self.inner.config.provider_report_timeout.as_millis())
                            .unwrap_or(Millis::MAX),
                    );
                    return Some((
                        RequestedEncounter {
                            id,
                            provider_ref: call.id,
                            ends_at: Some(check_at),
                            report: None,
                            outcome: None,
                        },
                        call.status,
                    ));
                }
                Err(CreateCallError::NotPlaced { retry_after, .. })
                    if tries < VAPI_PLACE_ATTEMPTS =>
                {
                    let wait = retry_after
                        .unwrap_or(Duration::from_millis(500 * u64::from(tries)))
                        .min(VAPI_MAX_RETRY_WAIT);
                    tracing::info!(
                        encounter_id = id.0,
                        tries,
                        "Vapi did not place the call; trying again"
                    );
                    tokio::time::sleep(wait).await;
                    match self.recheck_before_retry(id).await {
                        Recheck::Allowed => {}
                        Recheck::Withheld => return None,
                        // Not knowing whether contact is still allowed, don't call.
                        Recheck::Failed => {
                            return not_placed("the check before retrying could not be made");
                        }
                    }
                    tries += 1;
                }
                Err(CreateCallError::AtCapacity) => {
                    // Not started for lack of a slot: back in the queue, claimed (and so
                    // re-checked) again when a slot frees; never failed for it. No call is
                    // tried until one of ours ends or the back-off passes.
                    self.inner.call_backoff.start();
                    if let Err(error) = self.requeue_for_capacity(id, None).await {
                        tracing::error!(encounter_id = id.0, error = %error, "putting a call back in the queue failed");
                    }
                    return None;
                }
                Err(CreateCallError::Unknown { reason }) => {
                    // It may have gone out: wait for its end-of-call report (matched by the
                    // call's name), and end it as unknown if none comes.
                    tracing::warn!(
                        encounter_id = id.0,
                        reason,
                        "Vapi's answer does not say whether the call was placed; waiting for its report"
                    );
                    let check_at = self.inner.clock.now_millis().saturating_add(
                        Millis::try_from(self.inner.config.provider_report_timeout.as_millis())
                            .unwrap_or(Millis::MAX),
                    );
                    let request = RequestedEncounter {
                        id,
                        provider_ref: format!("{VAPI_UNKNOWN_PREFIX}{id}"),
                        ends_at: Some(check_at),
                        report: None,
                        outcome: None,
                    };
                    return Some((request, None));
                }
                Err(error) => {
                    tracing::warn!(encounter_id = id.0, error = %error, "call not placed");
                    return not_placed(match error {
                        CreateCallError::NotPlaced { .. } => {
                            "Vapi kept declining it (rate limited)"
                        }
                        CreateCallError::Refused { .. } => "Vapi refused the request",
                        CreateCallError::Unknown { .. } => {
                            "Vapi's answer did not say whether it was placed"
                        }
                        CreateCallError::AtCapacity => "Vapi had no free call slot",
                    });
                }
            }
        }
    }

    /// Applies Vapi's end-of-call report to its encounter: the report's `Call` object, the
    /// outcome to the engine, the sequence onwards — in one transaction. A report for an
    /// unknown call or an encounter that already ended changes nothing (`false`), so a
    /// duplicate or replayed report is harmless.
    pub async fn vapi_end_of_call(&self, report: &EndOfCallReport) -> Result<bool, SchedulerError> {
        let Some(call_id) = report.call_id() else {
            return Ok(false);
        };
        let store = &self.inner.store;
        let now = self.inner.clock.now_millis();
        let mut tx = WriteTx::begin(&self.inner).await?;
        if let Some(encounter) = store
            .encounter_by_provider_ref(&mut tx.tx, Channel::Call, call_id)
            .await?
        {
            if encounter.status == EncounterStatus::Ended {
                return Ok(false);
            }
            if report.ended_reason == CONCURRENCY_LIMIT_REACHED {
                // Vapi took the request but never started the call: no slot was free. Nobody
                // was called; it goes back in the queue instead of ending failed.
                drop(tx);
                self.inner.call_backoff.start();
                return self.requeue_for_capacity(encounter.id, Some(call_id)).await;
            }
            return self.apply_end_of_call(tx, encounter, report, now).await;
        }
        drop(tx);
        // No call id recorded for it: the report came before Clarion recorded the placement
        // (it is on its way, or the process died in between), or the placement's answer was
        // unclear. Only the call's name links it to an encounter, and a name is easy to
        // forge, so the call is read back from Vapi and its data is what gets applied.
        let Some(encounter_id) = report.call.as_ref().and_then(|call| call.encounter_id()) else {
            return Ok(false);
        };
        self.adopt_call_by_name(EncounterId(encounter_id), call_id)
            .await
    }

    /// Links an encounter whose Vapi call id was never recorded to the call `call_id` that
    /// names it, after reading the call back from Vapi ([`Scheduler::adopt_call`]). `false`
    /// when there is no such encounter or the call is not its;
    /// [`SchedulerError::ProviderUnavailable`] when Vapi could not be asked.
    pub(super) async fn adopt_call_by_name(
        &self,
        encounter_id: EncounterId,
        call_id: &str,
    ) -> Result<bool, SchedulerError> {
        let Some(vapi) = &self.inner.config.vapi else {
            return Ok(false);
        };
        let Some(candidate) = self.inner.store.encounter_by_id(encounter_id).await? else {
            return Ok(false);
        };
        if !call_unrecorded(&candidate) {
            return Ok(false);
        }
        let call = match vapi.get_call(call_id).await {
            Ok(call) => call,
            Err(error) if error.is_not_found() => {
                tracing::warn!(
                    encounter_id = encounter_id.0,
                    "a call report named an encounter but Vapi has no such call; ignored"
                );
                return Ok(false);
            }
            Err(error) => {
                tracing::warn!(encounter_id = encounter_id.0, error = %error, "could not read a call back to confirm its report");
                return Err(SchedulerError::ProviderUnavailable);
            }
        };
        self.adopt_call(&candidate, call).await
    }

    /// Adopts `call`, as Vapi returned it, for `candidate` (an encounter whose call id was
    /// never recorded), if the call names that encounter and was placed to its number: an
    /// ended call is applied as its end-of-call report; one still running gets its id
    /// recorded, so its report (or the next read-back) finds it. `false` otherwise.
    async fn adopt_call(
        &self,
        candidate: &EncounterRow,
        call: VapiCall,
    ) -> Result<bool, SchedulerError> {
        let store = &self.inner.store;
        let encounter_id = candidate.id;
        let confirmed = call.encounter_id() == Some(encounter_id.0)
            && call.customer.as_ref().and_then(|c| c.number.as_deref())
                == Some(candidate.phone_number.as_str());
        if not_started_for_capacity(&call) {
            // A record of a call Vapi never started (no slot was free): nothing to adopt.
            tracing::info!(
                encounter_id = encounter_id.0,
                "a call named an encounter but was never started (no free slot); ignored"
            );
            return Ok(false);
        }
        if !confirmed {
            tracing::warn!(
                encounter_id = encounter_id.0,
                "a call named an encounter, but not its number; ignored"
            );
            return Ok(false);
        }
        let now = self.inner.clock.now_millis();
        let mut tx = WriteTx::begin(&self.inner).await?;
        let Some(encounter) = store
            .encounter_for_update(&mut tx.tx, encounter_id)
            .await?
            .filter(call_unrecorded)
        else {
            return Ok(false);
        };
        let next_check = now.saturating_add(
            Millis::try_from(self.inner.config.provider_report_timeout.as_millis())
                .unwrap_or(Millis::MAX),
        );
        store
            .adopt_provider_ref(&mut tx.tx, encounter.id, &call.id, next_check)
            .await?;
        tracing::info!(
            encounter_id = encounter_id.0,
            "a call whose placement was not recorded was found at Vapi"
        );
        match EndOfCallReport::from_ended_call(call) {
            Some(report) => self.apply_end_of_call(tx, encounter, &report, now).await,
            None => {
                self.commit_callback(tx).await?;
                Ok(false)
            }
        }
    }

    /// Applies an end-of-call report to its (open) encounter in `tx`, and commits.
    pub(super) async fn apply_end_of_call(
        &self,
        mut tx: WriteTx,
        encounter: EncounterRow,
        report: &EndOfCallReport,
        now: Millis,
    ) -> Result<bool, SchedulerError> {
        let store = &self.inner.store;
        let assistant = self
            .assistant(encounter.org_id, encounter.assistant_id)
            .await?;
        let custom_fields: Vec<String> = assistant
            .custom_fields
            .as_array()
            .map(|fields| {
                fields
                    .iter()
                    .filter_map(|f| f.get("name").and_then(Value::as_str).map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let sequence_version = store
            .get_sequence(encounter.org_id, encounter.sequence_id)
            .await?
            .map(|s| s.template_version_id);
        let policy = match sequence_version {
            Some(version) => self.voicemail_action(version, encounter.step).await?,
            None => None,
        };
        // What was left on voicemail: the step's message, nothing after a hang-up, else the
        // assistant's own.
        let voicemail_message = match &policy {
            Some(VoicemailActionDefinition::LeaveMessage(text)) => Some(text.as_str()),
            Some(VoicemailActionDefinition::HangUp) => None,
            None => assistant
                .config
                .get("voicemail_message")
                .and_then(Value::as_str),
        };
        let facts = EncounterFacts {
            encounter_id: encounter.id.0,
            assistant_id: encounter.assistant_id.0,
            destination_number: &encounter.phone_number,
            source_number: encounter.caller_number.as_ref().map(|c| c.number.as_str()),
            voicemail_message,
            custom_fields: &custom_fields,
        };
        let end = call_from_end_of_call(report, &facts);
        let call = serde_json::to_value(&end.call).map_err(|_| SchedulerError::Corrupt("call"))?;
        if let Some(evidence) = &end.opt_out {
            Self::record_opt_out_evidence(&mut tx, &encounter, evidence, now);
        }
        self.finish_encounter(
            &mut tx,
            &encounter,
            end.engine_outcome,
            Some(&call),
            now,
            now,
        )
        .await?;
        tx.wake_workers();
        let started = tx.commit(store).await?;
        // A slot of ours is free at Vapi: calls waiting may be tried at once.
        self.inner.call_backoff.clear();
        self.inner.outbox.wake();
        self.wake();
        if !started.is_empty() {
            self.request_encounters(started).await?;
        }
        Ok(true)
    }

    /// A call whose placement is unknown (Vapi's answer was unclear, or the process died
    /// before recording it): looked for among the calls placed from Clarion's number since it
    /// was created, by its name. Found, it is adopted (and applied if it ended). Vapi listing
    /// no such call (and not a full page) means it was never placed: it ends `failed`. Vapi
    /// not answering: looked at again later, until `provider_give_up_after`.
    pub(super) async fn look_for_unknown_call(
        &self,
        encounter: &EncounterRow,
        next_check: Millis,
        given_up: bool,
    ) -> Result<bool, SchedulerError> {
        let listed = match &self.inner.config.vapi {
            Some(vapi) => {
                // A minute of slack for the clocks of Vapi and this node.
                let since = datetime(encounter.created_at.saturating_sub(60_000))
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
                let from = caller_phone_number_id(vapi, encounter);
                match vapi.list_calls(from, &since, VAPI_LIST_LIMIT).await {
                    Ok(calls) => Some(calls),
                    Err(error) => {
                        tracing::warn!(encounter_id = encounter.id.0, error = %error, "listing calls to find an unrecorded one failed");
                        None
                    }
                }
            }
            None => None,
        };
        let end = match listed {
            Some(calls) => {
                let full = calls.len() >= VAPI_LIST_LIMIT as usize;
                if let Some(call) = calls
                    .into_iter()
                    .find(|call| call.encounter_id() == Some(encounter.id.0))
                {
                    // The listed call is Vapi's own record: no need to read it again.
                    return self.adopt_call(encounter, call).await;
                }
                // Not on a complete list: never placed. On a full page it may be beyond it.
                if !full {
                    Some(NOT_PLACED_SUMMARY)
                } else {
                    given_up.then_some(UNKNOWN_PLACEMENT_SUMMARY)
                }
            }
            None => given_up.then_some(UNKNOWN_PLACEMENT_SUMMARY),
        };
        if let Some(summary) = end {
            return self
                .end_overdue(encounter, OverdueEnd::UnreportedCall { summary })
                .await;
        }
        self.inner
            .store
            .postpone_encounter_end(encounter.id, next_check)
            .await?;
        Ok(false)
    }

    /// An open call whose end-of-call report is overdue: one whose placement is unknown is
    /// looked for ([`Scheduler::look_for_unknown_call`]); a placed one is read back with
    /// `GET /call/{id}` (an ended call is applied as if its report had arrived; one still
    /// running, or unreadable, is looked at again after `provider_report_timeout`), and given
    /// up on after `provider_give_up_after`. `vapi` is `None` when Vapi has been switched off
    /// since the call was placed: then only the give-up ends it. Answers whether it ended.
    pub(super) async fn settle_overdue_call(
        &self,
        vapi: Option<&VapiClient>,
        encounter: &EncounterRow,
        now: Millis,
    ) -> Result<bool, SchedulerError> {
        let store = &self.inner.store;
        let next_check = now.saturating_add(
            Millis::try_from(self.inner.config.provider_report_timeout.as_millis())
                .unwrap_or(Millis::MAX),
        );
        let give_up_after = Millis::try_from(self.inner.config.provider_give_up_after.as_millis())
            .unwrap_or(Millis::MAX);
        let given_up = now.saturating_sub(encounter.created_at) >= give_up_after;
        if encounter
            .provider_ref
            .as_deref()
            .is_some_and(|r| r.starts_with(VAPI_UNKNOWN_PREFIX))
        {
            return self
                .look_for_unknown_call(encounter, next_check, given_up)
                .await;
        }
        // With Vapi switched off since the call was placed, it cannot be read back (and its
        // callbacks are not accepted): only the give-up below ends it.
        let read_back = match (vapi, encounter.provider_ref.as_deref()) {
            (Some(vapi), Some(call_id)) => match vapi.get_call(call_id).await {
                Ok(call) => EndOfCallReport::from_ended_call(call),
                Err(error) => {
                    tracing::warn!(encounter_id = encounter.id.0, error = %error, "reading an overdue call back failed");
                    None
                }
            },
            _ => None,
        };
        if let Some(report) = read_back {
            tracing::warn!(
                encounter_id = encounter.id.0,
                "end-of-call report never arrived; ended from the call read back"
            );
            return self.vapi_end_of_call(&report).await;
        }
        if given_up {
            // Neither a report nor a readable end for this long: the sequence must not wait
            // forever. The call is never placed again.
            let end = OverdueEnd::UnreportedCall {
                summary: NEVER_REPORTED_SUMMARY,
            };
            return self.end_overdue(encounter, end).await;
        }
        store
            .postpone_encounter_end(encounter.id, next_check)
            .await?;
        Ok(false)
    }

    /// Records a Vapi status update (`queued`, `ringing`, `in-progress`, `forwarding`) on its
    /// encounter, never moving backwards. `false` when it changed nothing.
    pub async fn vapi_status_update(
        &self,
        call_id: &str,
        status: &str,
    ) -> Result<bool, SchedulerError> {
        Ok(self
            .inner
            .store
            .set_provider_status(Channel::Call, call_id, status, &VAPI_STATUS_ORDER)
            .await?)
    }
}

/// Whether an encounter is a call still open whose Vapi call id was never recorded (its
/// placement unknown, or its answer lost in a crash).
fn call_unrecorded(encounter: &EncounterRow) -> bool {
    encounter.channel == Channel::Call
        && encounter.status != EncounterStatus::Ended
        && encounter.outcome.is_none()
        && encounter
            .provider_ref
            .as_deref()
            .is_none_or(|r| r.starts_with(VAPI_UNKNOWN_PREFIX))
}
