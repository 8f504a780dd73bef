//! Per-endpoint rate limits on the API actions that make Clarion do work for an endpoint on
//! demand: rotating its secret, sending it a test report, and retrying one of its deliveries
//! by hand.
//!
//! Each of them is cheap to ask for and not free to carry out (a rotation used to add a live
//! secret, hence a signature and an HMAC, to every later attempt; a test or a retry is an HTTP
//! request to the receiver), so one API key could otherwise make Clarion flood a receiver or
//! grow its own work without bound. The limits are generous for any real operator.
//!
//! Each (action, endpoint) pair has a token bucket, kept as GCRA (a "theoretical arrival
//! time" per key, integers only): `burst` requests at once, then one more every
//! `window / burst`. A refusal answers 429 with `Retry-After`.
//!
//! The buckets live in this process: with several API nodes behind a balancer each node
//! allows the full rate. A store-backed limit shared by every node is future work.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use clarion_store::{EndpointId, Millis};

use crate::error::ApiError;

/// An action limited per endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitedAction {
    /// `POST /v1/webhook-endpoints/{id}/rotate-secret`.
    RotateSecret,
    /// `POST /v1/webhook-endpoints/{id}/test`.
    SendTest,
    /// `POST /v1/webhook-deliveries/{id}/retry`, counted on the delivery's endpoint.
    RetryDelivery,
}

/// How often an action may happen on one endpoint: `burst` at once, `burst` per `window` in
/// the long run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub burst: u32,
    pub window: Duration,
}

impl LimitedAction {
    /// The limits in force. Rotation: 10 an hour (an operator rotates after a leak, not in a
    /// loop). Test reports: 60 an hour (someone wiring up a receiver sends a few dozen).
    /// Manual retries: 600 an hour per endpoint (a script re-driving failed deliveries after
    /// an outage gets 600 at once, then one every 6 s, and `Retry-After` paces it).
    pub const fn rule(self) -> Rule {
        const HOUR: Duration = Duration::from_secs(3600);
        match self {
            Self::RotateSecret => Rule {
                burst: 10,
                window: HOUR,
            },
            Self::SendTest => Rule {
                burst: 60,
                window: HOUR,
            },
            Self::RetryDelivery => Rule {
                burst: 600,
                window: HOUR,
            },
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Self::RotateSecret => "secret rotations",
            Self::SendTest => "test reports",
            Self::RetryDelivery => "manual delivery retries",
        }
    }
}

/// Past this many keys, keys whose bucket is full again (as good as absent) are dropped.
const PRUNE_ABOVE: usize = 4096;

/// Token buckets keyed by `K`, kept as GCRA: what [`ActionLimits`] and the dashboard's
/// sign-in limit share.
#[derive(Debug)]
pub struct Buckets<K> {
    /// When each key's bucket will be full again (GCRA's theoretical arrival time).
    full_at: Mutex<HashMap<K, Millis>>,
}

impl<K> Default for Buckets<K> {
    fn default() -> Self {
        Self {
            full_at: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: std::hash::Hash + Eq + Copy> Buckets<K> {
    /// Whether `key` has a token at `now` under `rule`; `Err(seconds to wait)` when not.
    /// Takes the token when `take` (a check that only looks leaves the bucket as it is).
    pub fn check(&self, key: K, rule: Rule, now: Millis, take: bool) -> Result<(), u64> {
        let window = Millis::try_from(rule.window.as_millis()).unwrap_or(Millis::MAX);
        let burst = Millis::from(rule.burst.max(1));
        // Each request adds `interval` to the bucket's fill time; a bucket holding more than
        // `tolerance` ahead of now has no token left.
        let interval = (window / burst).max(1);
        let tolerance = interval.saturating_mul(burst - 1);
        let mut full_at = self
            .full_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if full_at.len() > PRUNE_ABOVE {
            full_at.retain(|_, at| *at > now);
        }
        let tat = full_at.get(&key).copied().unwrap_or(now).max(now);
        let ahead = tat - now;
        if ahead > tolerance {
            let wait_millis = ahead - tolerance;
            // Whole seconds, rounded up: retrying after that long always finds a token.
            return Err(u64::try_from((wait_millis + 999) / 1000).unwrap_or(1));
        }
        if take {
            full_at.insert(key, tat.saturating_add(interval));
        }
        Ok(())
    }
}

/// The buckets of every (action, endpoint) pair seen lately. Cheap to share behind an `Arc`.
#[derive(Debug, Default)]
pub struct ActionLimits {
    buckets: Buckets<(LimitedAction, EndpointId)>,
}

impl ActionLimits {
    /// Takes one token for `action` on `endpoint` at `now`, or answers the 429 to send.
    pub fn check(
        &self,
        action: LimitedAction,
        endpoint: EndpointId,
        now: Millis,
    ) -> Result<(), ApiError> {
        let rule = action.rule();
        self.buckets
            .check((action, endpoint), rule, now, true)
            .map_err(|retry_after_secs| {
                ApiError::too_many_requests(
                    format!(
                        "too many {} for this endpoint (at most {} an hour); retry after {retry_after_secs} s",
                        action.describe(),
                        per_hour(rule),
                    ),
                    retry_after_secs,
                )
            })
    }
}

fn per_hour(rule: Rule) -> u64 {
    let window_secs = rule.window.as_secs().max(1);
    u64::from(rule.burst).saturating_mul(3600) / window_secs
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_burst_passes_then_one_more_per_interval() {
        let limits = ActionLimits::default();
        let endpoint = EndpointId(7);
        for _ in 0..10 {
            limits
                .check(LimitedAction::RotateSecret, endpoint, 1_000)
                .unwrap();
        }
        let refused = limits
            .check(LimitedAction::RotateSecret, endpoint, 1_000)
            .unwrap_err();
        assert_eq!(refused.status.as_u16(), 429);
        // One token comes back every 6 minutes.
        assert_eq!(refused.retry_after_secs, Some(360));
        // Another endpoint and another action have their own buckets.
        limits
            .check(LimitedAction::RotateSecret, EndpointId(8), 1_000)
            .unwrap();
        limits
            .check(LimitedAction::SendTest, endpoint, 1_000)
            .unwrap();
        let later = 1_000 + 360_000;
        limits
            .check(LimitedAction::RotateSecret, endpoint, later - 1)
            .unwrap_err();
        limits
            .check(LimitedAction::RotateSecret, endpoint, later)
            .unwrap();
        limits
            .check(LimitedAction::RotateSecret, endpoint, later)
            .unwrap_err();
    }
}
