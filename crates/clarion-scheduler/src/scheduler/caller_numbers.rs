//! Caller numbers: which of the organisation's numbers (`/v1/caller-numbers`) a call or a
//! conversation's first text goes out from. Chosen in the claim's transaction
//! ([`Scheduler::claim_for_request`]), under the lock of the organisation's numbers of the
//! channel, so choosers on any node never take a number past its daily cap.
//!
//! The choice itself is [`choose`], a pure function of the numbers, their contacts of the
//! last 24 hours, the contact's number and the instant: local presence first (a NANP number's
//! area code), then the least recently chosen (round robin), skipping numbers at their cap.
//! With every number at its cap, nobody is contacted and the attempt waits, through the
//! engine, until the first number frees up (`Event::CallerNumbersAtCap`).

use super::*;
use clarion_store::{CallerNumber, CallerNumberUses, ChosenCallerNumber};

/// The window a daily cap counts contacts in: a rolling 24 hours.
pub(super) const CAP_WINDOW_MILLIS: Millis = 24 * 3600 * 1000;

/// Where a number's cap window starts at `now`: contacts in (now − 24 h, now] count, so one
/// made exactly 24 h ago no longer does (and a deferral to when it leaves finds it gone).
pub(super) fn cap_window_start(now: Millis) -> Millis {
    now.saturating_sub(CAP_WINDOW_MILLIS).saturating_add(1)
}

/// Counts an attempt deferred because every caller number was at its cap (`/metrics`).
pub(super) fn count_cap_deferral(channel: Channel) {
    metrics::counter!("clarion_caller_number_cap_deferrals_total", "channel" => channel.as_str())
        .increment(1);
}

/// What a claim does about the number it goes out from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum CallerChoice {
    /// The organisation has no enabled caller number for the channel: the configured number
    /// (`[vapi] phone_number_id`, the Twilio sender) is used, as without the feature.
    Configured,
    /// This number.
    Use(CallerNumber),
    /// Every number is at its cap until this instant, when the first frees up.
    AtCap { until: Millis },
}

/// The area code of a North American (+1) number in E.164, if it is one.
pub(super) fn nanp_area_code(number: &str) -> Option<&str> {
    let digits = number.strip_prefix("+1")?;
    (digits.len() == 10 && digits.bytes().all(|b| b.is_ascii_digit())).then(|| &digits[..3])
}

/// Chooses the number for a contact with `contact` at `now` among `numbers` (the enabled
/// ones, each with its contacts since `now − 24 h`, oldest first). Numbers at their cap are
/// skipped; of the rest, those with the contact's area code come first, then the least
/// recently chosen (never chosen first), ties by id.
pub(super) fn choose(numbers: &[CallerNumberUses], contact: &str, now: Millis) -> CallerChoice {
    if numbers.is_empty() {
        return CallerChoice::Configured;
    }
    let area = nanp_area_code(contact);
    let mut frees_at: Option<Millis> = None;
    let mut best: Option<&CallerNumber> = None;
    let rank = |n: &CallerNumber| {
        let local = area.is_some() && nanp_area_code(&n.number) == area;
        (!local, n.last_chosen_at.unwrap_or(Millis::MIN), n.id)
    };
    for entry in numbers {
        let cap = entry
            .number
            .daily_cap
            .map(|cap| usize::try_from(cap).unwrap_or(usize::MAX));
        if let Some(cap) = cap
            && entry.uses.len() >= cap
        {
            // It frees up when enough of its contacts leave the window to bring it under
            // its cap: the (len − cap + 1)-th oldest.
            let oldest_that_counts = entry.uses[entry.uses.len() - cap];
            let at = oldest_that_counts.saturating_add(CAP_WINDOW_MILLIS);
            frees_at = Some(frees_at.map_or(at, |t| t.min(at)));
            continue;
        }
        if best.is_none_or(|b| rank(&entry.number) < rank(b)) {
            best = Some(&entry.number);
        }
    }
    match best {
        Some(number) => CallerChoice::Use(number.clone()),
        None => CallerChoice::AtCap {
            until: frees_at
                .unwrap_or_else(|| now.saturating_add(CAP_WINDOW_MILLIS))
                .max(now.saturating_add(1)),
        },
    }
}

impl Scheduler {
    /// The claim's choice of a caller number for `encounter`, inside the claim's transaction:
    /// the organisation's enabled numbers of the channel are locked and their contacts of the
    /// last 24 hours counted ([`Store::caller_numbers_for_choice`]), then [`choose`] decides.
    pub(super) async fn choose_caller_number(
        &self,
        tx: &mut Tx,
        encounter: &EncounterRow,
        org: OrgId,
        now: Millis,
    ) -> Result<CallerChoice, SchedulerError> {
        let numbers = self
            .inner
            .store
            .caller_numbers_for_choice(
                tx,
                org,
                encounter.channel,
                encounter.id,
                cap_window_start(now),
            )
            .await?;
        Ok(choose(&numbers, &encounter.phone_number, now))
    }
}

/// The number recorded on an encounter for `number`.
pub(super) fn chosen(number: &CallerNumber) -> ChosenCallerNumber {
    ChosenCallerNumber {
        id: number.id,
        number: number.number.clone(),
        provider_id: number.provider_id.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clarion_store::CallerNumberId;

    const HOUR: Millis = 3600 * 1000;
    const NOW: Millis = 1_000 * 24 * HOUR;

    fn number(id: i64, number: &str, cap: Option<u32>, last: Option<Millis>) -> CallerNumber {
        CallerNumber {
            id: CallerNumberId(id),
            org_id: OrgId(1),
            channel: Channel::Call,
            number: number.to_owned(),
            provider_id: Some(format!("pn_{id}")),
            daily_cap: cap,
            enabled: true,
            last_chosen_at: last,
            created_at: 0,
            updated_at: 0,
        }
    }

    fn uses(number: CallerNumber, uses: &[Millis]) -> CallerNumberUses {
        CallerNumberUses {
            number,
            uses: uses.to_vec(),
        }
    }

    fn chosen_id(choice: &CallerChoice) -> Option<i64> {
        match choice {
            CallerChoice::Use(n) => Some(n.id.0),
            _ => None,
        }
    }

    #[test]
    fn no_numbers_means_the_configured_one() {
        assert_eq!(choose(&[], "+18085550100", NOW), CallerChoice::Configured);
    }

    #[test]
    fn the_contacts_area_code_wins_over_the_round_robin() {
        let numbers = [
            uses(number(1, "+12125550100", None, None), &[]),
            uses(number(2, "+18085550100", None, Some(NOW - HOUR)), &[]),
        ];
        assert_eq!(chosen_id(&choose(&numbers, "+18085550199", NOW)), Some(2));
        // No number with the contact's area code (or not a NANP number): least recently
        // chosen first, never chosen before any.
        assert_eq!(chosen_id(&choose(&numbers, "+13125550199", NOW)), Some(1));
        assert_eq!(chosen_id(&choose(&numbers, "+447700900123", NOW)), Some(1));
    }

    #[test]
    fn round_robin_takes_the_least_recently_chosen_then_the_lowest_id() {
        let numbers = [
            uses(number(1, "+12125550100", None, Some(NOW - 2 * HOUR)), &[]),
            uses(number(2, "+12125550101", None, Some(NOW - 3 * HOUR)), &[]),
            uses(number(3, "+12125550102", None, Some(NOW - 3 * HOUR)), &[]),
        ];
        assert_eq!(chosen_id(&choose(&numbers, "+13125550199", NOW)), Some(2));
    }

    #[test]
    fn a_number_at_its_cap_is_skipped_even_when_local() {
        let numbers = [
            uses(number(1, "+18085550100", Some(1), None), &[NOW - HOUR]),
            uses(
                number(2, "+12125550100", Some(2), Some(NOW - HOUR)),
                &[NOW - HOUR],
            ),
        ];
        assert_eq!(chosen_id(&choose(&numbers, "+18085550199", NOW)), Some(2));
    }

    #[test]
    fn with_every_number_at_its_cap_the_attempt_waits_for_the_first_to_free_up() {
        let numbers = [
            uses(
                number(1, "+18085550100", Some(2), None),
                &[NOW - 20 * HOUR, NOW - 10 * HOUR, NOW - HOUR],
            ),
            uses(number(2, "+12125550100", Some(1), None), &[NOW - 5 * HOUR]),
        ];
        // Number 1 is under its cap again once its second-oldest contact leaves the window
        // (14 h from now); number 2 once its only one does (19 h).
        assert_eq!(
            choose(&numbers, "+18085550199", NOW),
            CallerChoice::AtCap {
                until: NOW + 14 * HOUR
            }
        );
    }

    #[test]
    fn area_codes_are_read_only_from_nanp_numbers() {
        assert_eq!(nanp_area_code("+18085550100"), Some("808"));
        assert_eq!(nanp_area_code("+1808555010"), None);
        assert_eq!(nanp_area_code("+447700900123"), None);
        assert_eq!(nanp_area_code("+1808555010x"), None);
    }
}
