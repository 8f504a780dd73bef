//! PHI retention and erasure: which sequences a purge takes, and what it did.

use crate::{Millis, OrgId, SequenceId};

/// Which ended sequences a PHI purge looks at ([`crate::Store::phi_purge_candidates`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhiSelection<'a> {
    /// Every organisation's ended sequences whose retention period (the organisation's
    /// `retention_days`) has passed at `now` and whose PHI is still kept.
    Expired { now: Millis },
    /// One organisation's ended sequences with one number (a contact's erasure), purged or
    /// not (an erasure runs again over what an earlier purge left), in id order after `after`.
    Contact {
        org: OrgId,
        phone_number: &'a str,
        after: Option<SequenceId>,
    },
}

/// What one [`crate::Store::purge_phi`] call purged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PhiPurged {
    /// The sequences whose PHI was purged, in id order.
    pub sequences: Vec<SequenceId>,
    /// Their encounter rows (report objects and conversations dropped).
    pub encounters: u64,
    /// Their stored message bodies (reports, events) rewritten without PHI.
    pub report_bodies: u64,
}
