//! Enrollment: validation, the engine's `Enrolled` step, and the inserts, a batch at a time.

use std::sync::Weak;

use tokio::sync::{mpsc, oneshot};

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

/// At most this many single enrollments share one transaction (about 0.5 MiB of variables at
/// 4 KiB each).
const MAX_GROUP: usize = 128;

/// One single enrollment waiting for the commit of the group it joined.
#[derive(Debug)]
pub(super) struct Waiting {
    org: OrgId,
    request: EnrollRequest,
    answer: oneshot::Sender<Result<Enrolled, SchedulerError>>,
}

/// Group commit for single enrollments (`POST /v1/sequences`).
///
/// Each enrollment is one transaction, and SQLite has one writer: under a burst, every
/// request waited for the write lock behind the others, and so did the scheduler's and the
/// dispatcher's writes, which is where reports waited. Instead, concurrent single enrollments
/// join a queue and one task commits them together, as many as are waiting (up to
/// [`MAX_GROUP`]), while the next group gathers behind it. Nothing waits for a group to fill:
/// a lone request is committed at once. Each request is answered only after the commit that
/// made it durable, with what enrolling it alone would have given (see
/// [`Scheduler::enroll_group`]).
#[derive(Debug, Default)]
pub(super) struct EnrollmentGroups {
    queue: std::sync::OnceLock<mpsc::UnboundedSender<Waiting>>,
}

/// The committing task: takes whatever has gathered, commits it, answers each request. It
/// holds the scheduler weakly, so it ends when the scheduler is dropped.
async fn commit_groups(scheduler: Weak<Inner>, mut queue: mpsc::UnboundedReceiver<Waiting>) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    while queue.recv_many(&mut group, MAX_GROUP).await > 0 {
        let Some(inner) = scheduler.upgrade() else {
            return;
        };
        let scheduler = Scheduler { inner };
        scheduler.commit_group(std::mem::take(&mut group)).await;
    }
}

impl Scheduler {
    /// Validates and enrolls one contact, in a transaction shared with the single
    /// enrollments arriving at the same time (see [`EnrollmentGroups`]); answered after that
    /// transaction commits.
    pub async fn enroll(
        &self,
        org: OrgId,
        request: EnrollRequest,
    ) -> Result<Enrolled, SchedulerError> {
        let queue = self.inner.enrollment_groups.queue.get_or_init(|| {
            let (queue, waiting) = mpsc::unbounded_channel();
            tokio::spawn(commit_groups(Arc::downgrade(&self.inner), waiting));
            queue
        });
        let (answer, answered) = oneshot::channel();
        queue
            .send(Waiting {
                org,
                request,
                answer,
            })
            .map_err(|_| SchedulerError::Stopped)?;
        // The committing task answers every request it takes, even when the commit fails; a
        // closed channel means the task itself is gone (the runtime is shutting down).
        answered.await.map_err(|_| SchedulerError::Stopped)?
    }

    /// Commits one group and answers each of its requests. When the shared transaction
    /// fails, each request is tried again alone, so that one request's failure is its own.
    async fn commit_group(&self, group: Vec<Waiting>) {
        let requests: Vec<(OrgId, EnrollRequest)> = group
            .iter()
            .map(|waiting| (waiting.org, waiting.request.clone()))
            .collect();
        match self.enroll_group(requests).await {
            Ok(results) => {
                for (waiting, result) in group.into_iter().zip(results) {
                    let _ = waiting.answer.send(result);
                }
            }
            Err(error) if group.len() == 1 => {
                if let Some(waiting) = group.into_iter().next() {
                    let _ = waiting.answer.send(Err(error));
                }
            }
            Err(error) if error.is_transient() => {
                // The database is away: every request of the group would fail alike, and
                // tried one by one each would wait out the pool's timeout in turn. All are
                // answered now (503); their clients try again.
                let reason = clarion_store::retry::error_chain(&error);
                for waiting in group {
                    let _ =
                        waiting
                            .answer
                            .send(Err(SchedulerError::Store(StoreError::Unavailable(
                                reason.clone().into(),
                            ))));
                }
            }
            Err(_) => {
                for waiting in group {
                    let alone = self
                        .enroll_group(vec![(waiting.org, waiting.request)])
                        .await
                        .and_then(|mut results| {
                            results
                                .pop()
                                .ok_or(SchedulerError::Corrupt("no enrollment result"))?
                        });
                    let _ = waiting.answer.send(alone);
                }
            }
        }
    }

    /// Enrolls several contacts of one organisation in one transaction; each gets its own
    /// result.
    pub async fn enroll_many(
        &self,
        org: OrgId,
        requests: Vec<EnrollRequest>,
    ) -> Result<Vec<Result<Enrolled, SchedulerError>>, SchedulerError> {
        self.enroll_group(requests.into_iter().map(|request| (org, request)).collect())
            .await
    }

    /// Enrolls several contacts, of one organisation or several, in one transaction; each
    /// gets its own result.
    ///
    /// Enrollments without an idempotency key are checked against the suppression list and
    /// inserted a batch at a time (a few statements for the lot); one with a key goes
    /// through [`Scheduler::enroll_in`], which looks the key up first. Either way the
    /// results are what enrolling the requests one by one, in order, would give. A template
    /// that cannot be read fails only the requests that name it.
    pub(super) async fn enroll_group(
        &self,
        requests: Vec<(OrgId, EnrollRequest)>,
    ) -> Result<Vec<Result<Enrolled, SchedulerError>>, SchedulerError> {
        let now = self.inner.clock.now_millis();
        let mut templates: HashMap<(OrgId, TemplateId), Result<TemplateInfo, SchedulerError>> =
            HashMap::new();
        let mut tx = WriteTx::begin(&self.inner).await?;
        let mut results: Vec<Option<Result<Enrolled, SchedulerError>>> =
            std::iter::repeat_with(|| None)
                .take(requests.len())
                .collect();
        let mut batch: Vec<(usize, Prepared)> = Vec::new();
        for (index, (org, request)) in requests.into_iter().enumerate() {
            if let std::collections::hash_map::Entry::Vacant(slot) =
                templates.entry((org, request.template_id))
            {
                let template = match self
                    .inner
                    .store
                    .get_template(org, request.template_id)
                    .await?
                {
                    Some(version) => serde_json::from_value(version.definition.clone())
                        .map(|definition| TemplateInfo {
                            version,
                            definition,
                        })
                        .map_err(|_| SchedulerError::Corrupt("template definition")),
                    None => Err(SchedulerError::TemplateNotFound),
                };
                slot.insert(template);
            }
            let template = match templates.get(&(org, request.template_id)) {
                Some(Ok(template)) => template,
                Some(Err(SchedulerError::Corrupt(what))) => {
                    results[index] = Some(Err(SchedulerError::Corrupt(what)));
                    continue;
                }
                Some(Err(_)) | None => {
                    results[index] = Some(Err(SchedulerError::TemplateNotFound));
                    continue;
                }
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
        tx.wake_workers();
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
