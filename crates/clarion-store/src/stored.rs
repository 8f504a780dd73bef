//! How the engine's enums are spelled in the database. Every backend stores the same words
//! (the API's own spelling), so a dump reads the same and migrations between backends copy
//! columns as they are. The overview's aggregates are assembled here from both backends'
//! rows, so that the two answer alike.

use clarion_engine::{Channel, SequenceStatus};

use crate::model::{AnsweredSlot, DeliveryDay, OutcomeCount, Overview, UNANSWERED_CALL_OUTCOMES};
use crate::{Result, StoreError};

/// A channel's stored spelling.
pub(crate) fn channel_str(channel: Channel) -> &'static str {
    channel.as_str()
}

/// The channel a stored word names.
pub(crate) fn channel(text: &str) -> Result<Channel> {
    match text {
        "call" => Ok(Channel::Call),
        "sms" => Ok(Channel::Sms),
        _ => Err(StoreError::Corrupt("unknown channel")),
    }
}

/// A sequence's stored JSON columns (`contact`, `variables`, `simulation`), read so that an
/// unreadable value never fails the read of a batch of sequences (every row of it would be
/// stuck with the bad one). Such a row decodes with a `null` contact, variables and script:
/// the scheduler cannot run it, and parks it (paused, a `parked` event) on its next event.
/// Logged with the sequence's id and the column, never the text.
pub(crate) fn sequence_json(
    id: i64,
    contact: &str,
    variables: &str,
    simulation: Option<&str>,
) -> (
    serde_json::Value,
    serde_json::Value,
    Option<serde_json::Value>,
) {
    use serde_json::Value;
    let read = (|| {
        let contact: Value = serde_json::from_str(contact).map_err(|_| "contact")?;
        let variables: Value = serde_json::from_str(variables).map_err(|_| "variables")?;
        let simulation = simulation
            .map(serde_json::from_str::<Value>)
            .transpose()
            .map_err(|_| "simulation")?;
        Ok::<_, &str>((contact, variables, simulation))
    })();
    read.unwrap_or_else(|column| {
        tracing::error!(
            sequence_id = id,
            column,
            "a sequence's stored JSON does not read; it decodes as a sequence that cannot run"
        );
        (Value::Null, Value::Null, None)
    })
}

/// A sequence status's stored spelling.
pub(crate) fn sequence_status_str(status: SequenceStatus) -> &'static str {
    match status {
        SequenceStatus::Active => "active",
        SequenceStatus::Paused => "paused",
        SequenceStatus::Ended => "ended",
    }
}

/// The sequence status a stored word names.
pub(crate) fn sequence_status(text: &str) -> Result<SequenceStatus> {
    match text {
        "active" => Ok(SequenceStatus::Active),
        "paused" => Ok(SequenceStatus::Paused),
        "ended" => Ok(SequenceStatus::Ended),
        _ => Err(StoreError::Corrupt("unknown sequence status")),
    }
}

/// The overview's rows as both backends read them: `(active, paused, ended)`, then
/// `(day, channel, outcome, count)`, `(zone, slot, count)` (up to `max_slots + 1` rows, the
/// extra one only saying there were more) and `(day, attempts, succeeded, p50, p99)`.
/// One day's delivery row: (day, attempts, succeeded, p50, p99).
pub(crate) type DeliveryRow = (i64, i64, i64, Option<i64>, Option<i64>);

pub(crate) struct OverviewRows {
    pub counts: (i64, i64, i64),
    pub outcomes: Vec<(i64, String, String, i64)>,
    pub slots: Vec<(String, i64, i64)>,
    pub deliveries: Vec<DeliveryRow>,
}

/// Assembles the overview from its rows, in an order that does not depend on the
/// database's collation.
pub(crate) fn overview(rows: OverviewRows, max_slots: u32) -> Result<Overview> {
    let count = |n: i64| u64::try_from(n).unwrap_or(0);
    let mut outcomes = rows
        .outcomes
        .into_iter()
        .map(|(day, channel_word, outcome, n)| {
            Ok(OutcomeCount {
                day,
                channel: channel(&channel_word)?,
                outcome,
                count: count(n),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    outcomes.sort();
    let max_slots = usize::try_from(max_slots).unwrap_or(usize::MAX);
    let answered_slots_truncated = rows.slots.len() > max_slots;
    let mut answered_slots: Vec<AnsweredSlot> = rows
        .slots
        .into_iter()
        .take(max_slots)
        .map(|(time_zone, slot_start, n)| AnsweredSlot {
            time_zone,
            slot_start,
            count: count(n),
        })
        .collect();
    answered_slots.sort();
    let deliveries = rows
        .deliveries
        .into_iter()
        .map(|(day, attempts, succeeded, p50, p99)| DeliveryDay {
            day,
            attempts: count(attempts),
            succeeded: count(succeeded),
            p50_ms: count(p50.unwrap_or(0)),
            p99_ms: count(p99.unwrap_or(0)),
        })
        .collect();
    let (active, paused, ended) = rows.counts;
    Ok(Overview {
        active: count(active),
        paused: count(paused),
        ended: count(ended),
        outcomes,
        answered_slots,
        answered_slots_truncated,
        deliveries,
    })
}

/// [`UNANSWERED_CALL_OUTCOMES`] as an SQL `IN` list of constant words.
pub(crate) fn unanswered_sql() -> String {
    UNANSWERED_CALL_OUTCOMES
        .iter()
        .map(|w| format!("'{w}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_reads_back() {
        for channel_value in [Channel::Call, Channel::Sms] {
            assert_eq!(
                channel(channel_str(channel_value)).ok(),
                Some(channel_value)
            );
        }
        for status in [
            SequenceStatus::Active,
            SequenceStatus::Paused,
            SequenceStatus::Ended,
        ] {
            assert_eq!(
                sequence_status(sequence_status_str(status)).ok(),
                Some(status)
            );
        }
        assert!(channel("fax").is_err());
        assert!(sequence_status("running").is_err());
    }
}
