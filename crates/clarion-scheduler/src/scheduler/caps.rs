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
        if !tx.encounters.is_empty() {
            // Contacts started earlier in this transaction count.
            tx.flush(&self.inner.store).await?;
        }
        let contacts = self
            .inner
            .store
            .contacts_since(
                &mut tx.tx,
                sequence.org_id,
                &sequence.phone_number,
                week_ago,
            )
            .await?;
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
