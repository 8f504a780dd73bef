//! The retry schedule: when the next attempt happens, if at all.
//!
//! The schedule lists the delay before each attempt; its length is the number of attempts.
//! Each delay gets ±20 % jitter so that a receiver recovering from an outage is not hit by
//! every retry at the same instant. A `Retry-After` on 429 or 503 is honoured, but clamped:
//! never sooner than the scheduled (jittered) delay and never later than `retry_after_max`.

use std::time::Duration;

use rand::Rng;

/// The share of each delay that jitter may add or remove.
pub const JITTER: f64 = 0.2;

/// The retry policy in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The delay before each attempt (the first is usually zero).
    pub schedule: Vec<Duration>,
    /// The most a `Retry-After` header can push an attempt back.
    pub retry_after_max: Duration,
}

impl RetryPolicy {
    /// The number of scheduled attempts.
    pub fn max_attempts(&self) -> u32 {
        u32::try_from(self.schedule.len()).unwrap_or(u32::MAX)
    }

    /// The delay before the first attempt.
    pub fn first_delay(&self) -> Duration {
        self.schedule.first().copied().unwrap_or_default()
    }

    /// The delay before the attempt after attempt number `attempts_made` (1-based), or `None`
    /// when the schedule is exhausted.
    pub fn delay_after(
        &self,
        attempts_made: u32,
        retry_after: Option<Duration>,
        rng: &mut impl Rng,
    ) -> Option<Duration> {
        let base = *self.schedule.get(usize::try_from(attempts_made).ok()?)?;
        let jittered = jitter(base, rng);
        Some(match retry_after {
            Some(asked) => asked.min(self.retry_after_max).max(jittered),
            None => jittered,
        })
    }
}

/// `base` scaled by a uniform factor in [1 - JITTER, 1 + JITTER].
pub fn jitter(base: Duration, rng: &mut impl Rng) -> Duration {
    if base.is_zero() {
        return base;
    }
    let factor = rng.random_range((1.0 - JITTER)..=(1.0 + JITTER));
    base.mul_f64(factor)
}

/// Parses a `Retry-After` value: delay seconds or an HTTP date (relative to `now_secs`).
pub fn parse_retry_after(value: &str, now_secs: i64) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    let at_secs = at.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
    let now = u64::try_from(now_secs).ok()?;
    Some(Duration::from_secs(at_secs.saturating_sub(now)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            schedule: [0, 5, 300, 1800].map(Duration::from_secs).to_vec(),
            retry_after_max: Duration::from_secs(3600),
        }
    }

    #[test]
    fn each_delay_stays_within_twenty_percent_of_the_schedule_and_jitter_varies() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let delay = policy().delay_after(2, None, &mut rng).unwrap();
            assert!(
                delay >= Duration::from_secs(240) && delay <= Duration::from_secs(360),
                "{delay:?}"
            );
            seen.insert(delay.as_millis());
        }
        assert!(seen.len() > 50, "jitter should spread retries out");
    }

    #[test]
    fn the_schedule_ends_after_its_last_entry() {
        let mut rng = StdRng::seed_from_u64(1);
        assert!(policy().delay_after(3, None, &mut rng).is_some());
        assert_eq!(policy().delay_after(4, None, &mut rng), None);
        assert_eq!(policy().max_attempts(), 4);
    }

    #[test]
    fn retry_after_is_honoured_but_clamped_between_the_schedule_and_the_maximum() {
        let mut rng = StdRng::seed_from_u64(3);
        let asked_longer = policy()
            .delay_after(1, Some(Duration::from_secs(120)), &mut rng)
            .unwrap();
        assert_eq!(asked_longer, Duration::from_secs(120));
        let asked_shorter = policy()
            .delay_after(2, Some(Duration::from_secs(1)), &mut rng)
            .unwrap();
        assert!(
            asked_shorter >= Duration::from_secs(240),
            "{asked_shorter:?}"
        );
        let asked_forever = policy()
            .delay_after(1, Some(Duration::from_secs(86_400)), &mut rng)
            .unwrap();
        assert_eq!(asked_forever, Duration::from_secs(3600));
    }

    #[test]
    fn retry_after_parses_seconds_and_http_dates() {
        assert_eq!(parse_retry_after(" 30 ", 0), Some(Duration::from_secs(30)));
        // Sun, 06 Nov 1994 08:49:37 GMT = 784111777
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", 784_111_777 - 90),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", 784_111_777 + 5),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", 0), None);
    }
}
