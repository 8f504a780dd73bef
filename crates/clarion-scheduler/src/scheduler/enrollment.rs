//! Enrollment: validation, the engine's `Enrolled` step, and the inserts, a batch at a time.

use super::*;

/// A template version with its parsed definition, read once per enrollment batch.
#[derive(Debug)]
pub(super) struct TemplateInfo {
    pub(super) version: clarion_store::TemplateVersion,
    pub(super) definition: TemplateDefinition,
}

/// An enrollment validated and run through the engine's `Enrolled` step, ready to insert.
#[derive(Debug)]
pub(super) struct Prepared {
    pub(super) org: OrgId,
    pub(super) template_id: TemplateId,
    pub(super) template_version_id: TemplateVersionId,
    pub(super) request: EnrollRequest,
    pub(super) contact_json: Value,
    pub(super) state: SequenceState,
    pub(super) state_text: String,
    pub(super) actions: Vec<Action>,
    pub(super) now: Millis,
}

impl Prepared {
    pub(super) fn new_sequence<'a>(&'a self, variables: &'a Value) -> NewSequence<'a> {
        NewSequence {
            org_id: self.org,
            template_id: self.template_id,
            template_version_id: self.template_version_id,
            phone_number: &self.request.contact.phone_number,
            contact: &self.contact_json,
            variables,
            simulation: self.request.simulation.as_ref(),
            status: self.state.status,
            state: &self.state_text,
            next_wake_at: self.state.next_wake.map(millis),
            allow_concurrent: self.request.allow_concurrent,
            idempotency_key: None,
            idempotency_fingerprint: None,
            now: self.now,
        }
    }
}

/// Validates one enrollment and runs the engine's `Enrolled` step (no I/O).
pub(super) fn prepare_enrollment(
    org: OrgId,
    info: &TemplateInfo,
    request: EnrollRequest,
    now: Millis,
) -> Result<Prepared, SchedulerError> {
    let contact = &request.contact;
    definition::validate_e164("contact.phone_number", &contact.phone_number)?;
    // Checked at the API too; here as well, so no path into the store skips the limits.
    definition::validate_variables("variables", &request.variables)?;
    let plan = plan_for(&info.definition, &contact.time_zone)?;
    let Transition { state, actions } = clarion_engine::step(
        &plan,
        &SequenceState::new(),
        &Event::Enrolled,
        datetime(now),
    );
    let state_text = serde_json::to_string(&state).map_err(|_| SchedulerError::Corrupt("state"))?;
    let contact_json =
        serde_json::to_value(contact).map_err(|_| SchedulerError::Corrupt("contact"))?;
    Ok(Prepared {
        org,
        template_id: info.version.template_id,
        template_version_id: info.version.version_id,
        request,
        contact_json,
        state,
        state_text,
        actions,
        now,
    })
}

impl Scheduler {
    /// Validates and enrolls one contact.
    pub async fn enroll(
        &self,
        org: OrgId,
        request: EnrollRequest,
    ) -> Result<Enrolled, SchedulerError> {
        let mut results = self.enroll_many(org, vec![request]).await?;
        results
            .pop()
            .ok_or(SchedulerError::Corrupt("no enrollment result"))?
    }

    /// Enrolls several contacts in one transaction; each gets its own result.
    ///
    /// Enrollments without an idempotency key are checked against the suppression list and
    /// inserted a batch at a time (a few statements for the lot); one with a key goes
    /// through [`Scheduler::enroll_in`], which looks the key up first. Either way the
    /// results are what enrolling the requests one by one, in order, would give.
    pub async fn enroll_many(
        &self,
        org: OrgId,
        requests: Vec<EnrollRequest>,
    ) -> Result<Vec<Result<Enrolled, SchedulerError>>, SchedulerError> {
        let now = self.inner.clock.now_millis();
        let mut templates: HashMap<TemplateId, Option<TemplateInfo>> = HashMap::new();
        let mut tx = WriteTx::begin(&self.inner).await?;
        let mut results: Vec<Option<Result<Enrolled, SchedulerError>>> =
            std::iter::repeat_with(|| None)
                .take(requests.len())
                .collect();
        let mut batch: Vec<(usize, Prepared)> = Vec::new();
        for (index, request) in requests.into_iter().enumerate() {
            if let std::collections::hash_map::Entry::Vacant(slot) =
                templates.entry(request.template_id)
            {
                let template = self
                    .inner
                    .store
                    .get_template(org, request.template_id)
                    .await?
                    .map(|version| {
                        serde_json::from_value(version.definition.clone())
                            .map(|definition| TemplateInfo {
                                version,
                                definition,
                            })
                            .map_err(|_| SchedulerError::Corrupt("template definition"))
                    })
                    .transpose()?;
                slot.insert(template);
            }
            let Some(Some(template)) = templates.get(&request.template_id) else {
                results[index] = Some(Err(SchedulerError::TemplateNotFound));
                continue;
            };
            if request.idempotency_key.is_some() {
                self.enroll_batch(&mut tx, std::mem::take(&mut batch), &mut results, now)
                    .await?;
                results[index] = Some(self.enroll_in(&mut tx, org, template, request, now).await);
                continue;
            }
            match prepare_enrollment(org, template, request, now) {
                Ok(prepared) => batch.push((index, prepared)),
                Err(error) => results[index] = Some(Err(error)),
            }
        }
        self.enroll_batch(&mut tx, batch, &mut results, now).await?;
        tx.commit(&self.inner.store).await?;
        self.wake();
        results
            .into_iter()
            .map(|result| result.ok_or(SchedulerError::Corrupt("no enrollment result")))
            .collect()
    }

    /// Enrolls prepared contacts (no idempotency keys) in one go, inside `tx`.
    pub(super) async fn enroll_batch(
        &self,
        tx: &mut WriteTx,
        batch: Vec<(usize, Prepared)>,
        results: &mut [Option<Result<Enrolled, SchedulerError>>],
        now: Millis,
    ) -> Result<(), SchedulerError> {
        if batch.is_empty() {
            return Ok(());
        }
        let store = &self.inner.store;
        let numbers: Vec<(OrgId, &str)> = batch
            .iter()
            .map(|(_, p)| (p.org, p.request.contact.phone_number.as_str()))
            .collect();
        let suppressed = store.are_suppressed(&mut tx.tx, &numbers).await?;
        let mut allowed = Vec::with_capacity(batch.len());
        for ((index, prepared), suppressed) in batch.into_iter().zip(suppressed) {
            if suppressed {
                results[index] = Some(Err(SchedulerError::Suppressed));
            } else {
                allowed.push((index, prepared));
            }
        }
        if tx.ends {
            // A sequence ended in this transaction no longer holds its number.
            tx.flush(store).await?;
        }
        let variables: Vec<Value> = allowed
            .iter()
            .map(|(_, p)| Value::Object(p.request.variables.clone()))
            .collect();
        let rows: Vec<NewSequence<'_>> = allowed
            .iter()
            .zip(&variables)
            .map(|((_, p), variables)| p.new_sequence(variables))
            .collect();
        let inserted = store.insert_sequences(&mut tx.tx, &rows).await?;
        drop(rows);
        for ((index, prepared), row) in allowed.into_iter().zip(inserted) {
            results[index] = Some(match row {
                Some(row) => {
                    self.perform(tx, &row, &prepared.state, &prepared.actions, now)
                        .await?;
                    Ok(Enrolled::Created(row))
                }
                None => Err(SchedulerError::AlreadyRunning),
            });
        }
        Ok(())
    }

    pub(super) async fn enroll_in(
        &self,
        tx: &mut WriteTx,
        org: OrgId,
        info: &TemplateInfo,
        request: EnrollRequest,
        now: Millis,
    ) -> Result<Enrolled, SchedulerError> {
        let store = &self.inner.store;
        let template = &info.version;
        let contact = &request.contact;
        definition::validate_e164("contact.phone_number", &contact.phone_number)?;
        definition::validate_variables("variables", &request.variables)?;
        let plan = plan_for(&info.definition, &contact.time_zone)?;
        if store
            .is_suppressed(&mut tx.tx, org, &contact.phone_number)
            .await?
        {
            // A replayed request (same idempotency key) still gets the sequence the first one
            // created; a suppressed number never gets a new one.
            if let Some(key) = &request.idempotency_key
                && let Some(existing) = self
                    .existing_by_key(tx, org, key, Some(&request.fingerprint()))
                    .await?
            {
                return Ok(Enrolled::Existing(existing));
            }
            return Err(SchedulerError::Suppressed);
        }
        let Transition { state, actions } = clarion_engine::step(
            &plan,
            &SequenceState::new(),
            &Event::Enrolled,
            datetime(now),
        );
        let state_text =
            serde_json::to_string(&state).map_err(|_| SchedulerError::Corrupt("state"))?;
        let contact_json =
            serde_json::to_value(contact).map_err(|_| SchedulerError::Corrupt("contact"))?;
        let variables = Value::Object(request.variables.clone());
        let fingerprint = request
            .idempotency_key
            .as_ref()
            .map(|_| request.fingerprint());
        let new = NewSequence {
            org_id: org,
            template_id: template.template_id,
            template_version_id: template.version_id,
            phone_number: &contact.phone_number,
            contact: &contact_json,
            variables: &variables,
            simulation: request.simulation.as_ref(),
            status: state.status,
            state: &state_text,
            next_wake_at: state.next_wake.map(millis),
            allow_concurrent: request.allow_concurrent,
            idempotency_key: request.idempotency_key.as_deref(),
            idempotency_fingerprint: fingerprint.as_deref(),
            now,
        };
        if tx.ends {
            // A sequence ended in this transaction no longer holds its number.
            tx.flush(store).await?;
        }
        let row = match store.insert_sequence(&mut tx.tx, &new).await? {
            Ok(row) => row,
            Err(InsertSequenceError::SameIdempotencyKey(id)) => {
                let existing = tx
                    .sequence_for_update(store, id)
                    .await?
                    .ok_or(SchedulerError::Corrupt("idempotent sequence vanished"))?;
                return Ok(Enrolled::Existing(existing));
            }
            Err(InsertSequenceError::IdempotencyKeyReused(_)) => {
                return Err(SchedulerError::IdempotencyKeyReused);
            }
            Err(InsertSequenceError::AlreadyRunning) => return Err(SchedulerError::AlreadyRunning),
        };
        self.perform(tx, &row, &state, &actions, now).await?;
        Ok(Enrolled::Created(row))
    }

    /// The sequence `key` created, when this request (its `fingerprint`) replays the one that
    /// created it; [`SchedulerError::IdempotencyKeyReused`] when another request used the key.
    pub(super) async fn existing_by_key(
        &self,
        tx: &mut WriteTx,
        org: OrgId,
        key: &str,
        fingerprint: Option<&str>,
    ) -> Result<Option<SequenceRow>, SchedulerError> {
        let existing = self
            .inner
            .store
            .sequence_by_idempotency_key(&mut tx.tx, org, key)
            .await?;
        match existing {
            Some(earlier) if !earlier.replayed_by(fingerprint) => {
                Err(SchedulerError::IdempotencyKeyReused)
            }
            Some(earlier) => Ok(tx
                .sequence_for_update(&self.inner.store, earlier.id)
                .await?),
            None => Ok(None),
        }
    }
}
