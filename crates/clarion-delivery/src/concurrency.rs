//! Per-endpoint concurrency that fits the receiver: additive increase, multiplicative
//! decrease (AIMD), as TCP's congestion window does.
//!
//! A fixed cap protects a receiver of unknown capacity but throttles a fast one. Each
//! endpoint's limit starts at [`START`] (clamped to the configured floor and ceiling) and:
//!
//! - **rises** by one per limit's worth of successes (`+1/limit` per 2xx) while the endpoint
//!   is using its limit (an endpoint that never fills its slots proves nothing about more)
//!   and its latency stays near the lowest seen (at most twice it, plus [`LATENCY_SLACK`]);
//! - **eases off** by `1/limit` per 2xx whose latency is above that: the receiver is queueing;
//! - is **halved** on a timeout, a refused or reset connection, a 5xx or a 429, at most once
//!   per [`CUT_SPACING`] (the attempts in flight when a receiver falls over all fail
//!   together; that is one signal, not sixteen);
//! - never leaves `[floor, ceiling]` (`webhooks.min_in_flight_per_endpoint`,
//!   `webhooks.max_in_flight_per_endpoint`); floor = ceiling is a fixed limit.
//!
//! Limits are this node's (like the in-flight counts they bound) and live in memory: a
//! restart begins again at [`START`], which is the old fixed limit.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use clarion_store::EndpointId;

/// Where every endpoint's limit begins.
pub const START: u32 = 16;
/// Latency above twice the lowest seen, plus this, counts as queueing at the receiver.
const LATENCY_SLACK: Duration = Duration::from_millis(50);
/// At most one cut per endpoint in this long.
const CUT_SPACING: Duration = Duration::from_secs(1);
/// How fast the lowest latency seen forgets an old low (per sample), so that a receiver
/// whose baseline moved up is not judged against a low it no longer has.
const MIN_LATENCY_DRIFT: f64 = 0.001;

/// What one finished attempt says about the receiver's capacity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Signal {
    /// A 2xx, in this long.
    Success(Duration),
    /// A timeout, a refused or reset connection, a 5xx or a 429: too much.
    Overloaded,
    /// Anything else (a 4xx, a TLS or DNS error, a blocked target): nothing about load.
    Neutral,
}

impl Signal {
    /// The signal of an attempt's result: its status code, or its error class.
    pub fn of(status_code: Option<u16>, error: Option<&str>, duration: Duration) -> Self {
        match (status_code, error) {
            (Some(200..=299), _) => Self::Success(duration),
            (Some(429 | 500..=599), _) => Self::Overloaded,
            (None, Some("timeout" | "connection-refused" | "connection-reset")) => Self::Overloaded,
            _ => Self::Neutral,
        }
    }
}

#[derive(Debug, Clone)]
struct EndpointLimit {
    limit: f64,
    /// The lowest latency seen, drifting up slowly (see [`MIN_LATENCY_DRIFT`]).
    min_latency: Option<f64>,
    last_cut: Option<Instant>,
}

/// The limits of the endpoints this node has sent to.
#[derive(Debug, Clone)]
pub struct AdaptiveLimits {
    floor: u32,
    ceiling: u32,
    limits: HashMap<EndpointId, EndpointLimit>,
}

impl AdaptiveLimits {
    /// Limits between `floor` and `ceiling` (a floor above the ceiling is taken as the
    /// ceiling; zero as one).
    pub fn new(floor: u32, ceiling: u32) -> Self {
        let ceiling = ceiling.max(1);
        Self {
            floor: floor.clamp(1, ceiling),
            ceiling,
            limits: HashMap::new(),
        }
    }

    /// Where an endpoint not seen yet starts.
    pub fn start(&self) -> u32 {
        START.clamp(self.floor, self.ceiling)
    }

    /// The endpoint's current limit.
    pub fn limit(&self, endpoint: EndpointId) -> u32 {
        self.limits
            .get(&endpoint)
            .map_or(self.start(), |state| whole(state.limit))
    }

    /// Every endpoint with a limit of its own, for the claim.
    pub fn snapshot(&self) -> Vec<(EndpointId, u32)> {
        self.limits
            .iter()
            .map(|(endpoint, state)| (*endpoint, whole(state.limit)))
            .collect()
    }

    /// Learns from one finished attempt. `in_flight` is how many attempts to the endpoint
    /// were in flight when it finished, itself included.
    pub fn observe(&mut self, endpoint: EndpointId, signal: Signal, in_flight: u32, now: Instant) {
        let (floor, ceiling) = (f64::from(self.floor), f64::from(self.ceiling));
        let start = f64::from(self.start());
        let state = self
            .limits
            .entry(endpoint)
            .or_insert_with(|| EndpointLimit {
                limit: start,
                min_latency: None,
                last_cut: None,
            });
        match signal {
            Signal::Success(latency) => {
                let latency = latency.as_secs_f64();
                let min = match state.min_latency {
                    Some(min) if latency >= min => min + (latency - min) * MIN_LATENCY_DRIFT,
                    _ => latency,
                };
                state.min_latency = Some(min);
                let queueing = latency > 2.0 * min + LATENCY_SLACK.as_secs_f64();
                if queueing {
                    state.limit = (state.limit - 1.0 / state.limit).max(floor);
                } else if f64::from(in_flight) + 1.0 >= state.limit.floor() {
                    state.limit = (state.limit + 1.0 / state.limit).min(ceiling);
                }
            }
            Signal::Overloaded => {
                if state
                    .last_cut
                    .is_none_or(|at| now.saturating_duration_since(at) >= CUT_SPACING)
                {
                    state.limit = (state.limit / 2.0).max(floor);
                    state.last_cut = Some(now);
                }
            }
            Signal::Neutral => {}
        }
    }
}

fn whole(limit: f64) -> u32 {
    // In [floor, ceiling], both u32: the cast cannot truncate out of range.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let whole = limit.floor() as u32;
    whole.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAST: Duration = Duration::from_millis(1);
    const E: EndpointId = EndpointId(1);

    #[test]
    fn a_busy_fast_receiver_raises_the_limit_to_the_ceiling_and_no_further() {
        let mut limits = AdaptiveLimits::new(2, 64);
        let now = Instant::now();
        assert_eq!(limits.limit(E), 16);
        for _ in 0..10_000 {
            let in_flight = limits.limit(E);
            limits.observe(E, Signal::Success(FAST), in_flight, now);
        }
        assert_eq!(limits.limit(E), 64);
    }

    #[test]
    fn an_idle_endpoint_proves_nothing_about_more() {
        let mut limits = AdaptiveLimits::new(2, 64);
        for _ in 0..10_000 {
            limits.observe(E, Signal::Success(FAST), 1, Instant::now());
        }
        assert_eq!(limits.limit(E), 16);
    }

    #[test]
    fn failures_halve_once_per_spacing_down_to_the_floor() {
        let mut limits = AdaptiveLimits::new(2, 64);
        let start = Instant::now();
        // Sixteen attempts in flight fail together: one cut.
        for _ in 0..16 {
            limits.observe(E, Signal::Overloaded, 16, start);
        }
        assert_eq!(limits.limit(E), 8);
        let later = start + CUT_SPACING;
        limits.observe(E, Signal::Overloaded, 8, later);
        assert_eq!(limits.limit(E), 4);
        for n in 2..10 {
            limits.observe(E, Signal::Overloaded, 1, start + CUT_SPACING * n);
        }
        assert_eq!(limits.limit(E), 2, "never below the floor");
    }

    #[test]
    fn rising_latency_eases_the_limit_off() {
        let mut limits = AdaptiveLimits::new(2, 64);
        let now = Instant::now();
        limits.observe(E, Signal::Success(FAST), 16, now);
        for _ in 0..200 {
            limits.observe(E, Signal::Success(Duration::from_millis(200)), 16, now);
        }
        assert!(limits.limit(E) < 16, "{}", limits.limit(E));
    }

    #[test]
    fn signals_follow_the_attempts_result() {
        let ms = Duration::from_millis(3);
        assert_eq!(Signal::of(Some(204), None, ms), Signal::Success(ms));
        assert_eq!(Signal::of(Some(503), None, ms), Signal::Overloaded);
        assert_eq!(Signal::of(Some(429), None, ms), Signal::Overloaded);
        assert_eq!(Signal::of(None, Some("timeout"), ms), Signal::Overloaded);
        assert_eq!(Signal::of(Some(404), None, ms), Signal::Neutral);
        assert_eq!(Signal::of(None, Some("tls-error"), ms), Signal::Neutral);
    }

    #[test]
    fn a_fixed_limit_when_floor_meets_ceiling() {
        let mut limits = AdaptiveLimits::new(16, 16);
        let now = Instant::now();
        for _ in 0..1_000 {
            limits.observe(E, Signal::Success(FAST), 16, now);
        }
        limits.observe(E, Signal::Overloaded, 16, now);
        assert_eq!(limits.limit(E), 16);
    }
}
