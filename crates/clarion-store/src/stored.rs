//! How the engine's enums are spelled in the database. Every backend stores the same words
//! (the API's own spelling), so a dump reads the same and migrations between backends copy
//! columns as they are.

use clarion_engine::{Channel, SequenceStatus};

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
