//! Contact caps: rolling-window limits per number, across sequences and channels.

use super::*;

/// Contact caps (rolling windows, per number, across sequences and channels); 0 is no cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContactCaps {
    pub per_day: u32,
    pub per_week: u32,
}

impl ContactCaps {
    /// An organisation's caps: its own settings where it has them (`None`: the deployment
    /// default, `default`), or `None` when neither window is capped.
    pub fn resolve(
        default: Option<ContactCaps>,
        per_day: Option<u32>,
        per_week: Option<u32>,
    ) -> Option<ContactCaps> {
        let caps = ContactCaps {
            per_day: per_day.unwrap_or(default.map_or(0, |d| d.per_day)),
            per_week: per_week.unwrap_or(default.map_or(0, |d| d.per_week)),
        };
        (caps.per_day > 0 || caps.per_week > 0).then_some(caps)
    }
}

impl Scheduler {
    /// The start times of the number's contacts by the organisation since `since`, in order,
    /// counting those started earlier in this transaction.
    async fn contacts_since(
        &self,
        tx: &mut WriteTx,
        sequence: &SequenceRow,
        since: Millis,
    ) -> Result<Vec<Millis>, SchedulerError> {
        if !tx.encounters.is_empty() {
            tx.flush(&self.inner.store).await?;
        }
        Ok(self
            .inner
            .store
            .contacts_since(&mut tx.tx, sequence.org_id, &sequence.phone_number, since)
            .await?)
    }

    /// The calling rules' attempt limits (`limits`: the rule's index in the plan and its
    /// limit per rolling 24 hours, counting every contact of the number in the organisation):
    /// the latest instant one of them allows another contact, and which, when that is after
    /// `now`.
    pub(super) async fn rule_cap(
        &self,
        tx: &mut WriteTx,
        sequence: &SequenceRow,
        limits: &[(usize, u32)],
        now: Millis,
    ) -> Result<Option<RuleCap>, SchedulerError> {
        const DAY: Millis = 24 * 3600 * 1000;
        if limits.is_empty() {
            return Ok(None);
        }
        let times = self.contacts_since(tx, sequence, now - DAY).await?;
        let mut latest: Option<(Millis, usize)> = None;
        for &(rule, limit) in limits {
            let limit = usize::try_from(limit).unwrap_or(usize::MAX);
            if limit == 0 || times.len() < limit {
                continue;
            }
            // The contact that must fall out of the 24 hours before another is allowed.
            let allows = times[times.len() - limit] + DAY;
            if allows > now && latest.is_none_or(|(at, _)| allows > at) {
                latest = Some((allows, rule));
            }
        }
        Ok(latest.map(|(at, rule)| RuleCap {
            allows_at: datetime(at),
            rule,
        }))
    }

    /// Rolling-window contact caps: the earliest instant another contact is allowed.
    pub(super) async fn cap_allows_at(
        &self,
        tx: &mut WriteTx,
        sequence: &SequenceRow,
        caps: Option<ContactCaps>,
        now: Millis,
    ) -> Result<Option<Millis>, SchedulerError> {
        let Some(caps) = caps else {
            return Ok(None);
        };
        const DAY: Millis = 24 * 3600 * 1000;
        let week_ago = now - 7 * DAY;
        let contacts = self.contacts_since(tx, sequence, week_ago).await?;
        let mut allows = now;
        let day: Vec<Millis> = contacts
            .iter()
            .copied()
            .filter(|t| *t >= now - DAY)
            .collect();
        for (window, cap, times) in [
            (DAY, caps.per_day, &day),
            (7 * DAY, caps.per_week, &contacts),
        ] {
            let cap = usize::try_from(cap).unwrap_or(usize::MAX);
            if cap > 0 && times.len() >= cap {
                // The contact that must fall out of the window before another is allowed.
                allows = allows.max(times[times.len() - cap] + window);
            }
        }
        Ok((allows > now).then_some(allows))
    }
}
