//! The engine's clock: real time, or real time sped up by `simulator.time_scale`.

use clarion_clock::Clock;

/// Virtual time that runs `scale` times faster than the system clock, starting at the
/// system time when it was made. With scale 1 it is the system clock.
#[derive(Debug, Clone)]
pub struct ScaledClock {
    anchor_millis: i64,
    started: std::time::Instant,
    scale: f64,
}

impl ScaledClock {
    /// A clock that starts at the system time.
    pub fn new(scale: f64) -> Self {
        Self::starting_at(chrono::Utc::now().timestamp_millis(), scale)
    }

    /// A clock that starts at `anchor_millis`, or at the system time if that is later. A
    /// sped-up clock runs ahead of real time; after a restart it must resume from the latest
    /// engine time already stored, or stored times would lie in its future.
    pub fn starting_at(anchor_millis: i64, scale: f64) -> Self {
        Self {
            anchor_millis: anchor_millis.max(chrono::Utc::now().timestamp_millis()),
            started: std::time::Instant::now(),
            scale: if scale.is_finite() && scale > 0.0 {
                scale
            } else {
                1.0
            },
        }
    }
}

impl Clock for ScaledClock {
    fn now_millis(&self) -> i64 {
        let elapsed = self.started.elapsed().as_secs_f64() * 1000.0 * self.scale;
        self.anchor_millis.saturating_add(elapsed as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restarted_clock_never_goes_back_before_stored_engine_time() {
        let ahead = chrono::Utc::now().timestamp_millis() + 3_600_000;
        let clock = ScaledClock::starting_at(ahead, 1000.0);
        assert!(clock.now_millis() >= ahead);
        let behind = ScaledClock::starting_at(0, 1.0);
        assert!(behind.now_millis() >= chrono::Utc::now().timestamp_millis() - 1000);
    }
}
