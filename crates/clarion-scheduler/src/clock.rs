//! The engine's clock: real time, or real time sped up by `simulator.time_scale`.

use clarion_delivery::Clock;

/// Virtual time that runs `scale` times faster than the system clock, starting at the
/// system time when it was made. With scale 1 it is the system clock.
#[derive(Debug, Clone)]
pub struct ScaledClock {
    anchor_millis: i64,
    started: std::time::Instant,
    scale: f64,
}

impl ScaledClock {
    pub fn new(scale: f64) -> Self {
        Self {
            anchor_millis: chrono::Utc::now().timestamp_millis(),
            started: std::time::Instant::now(),
            scale: if scale.is_finite() && scale > 0.0 {
                scale
            } else {
                1.0
            },
        }
    }

    /// How long to really wait until the virtual clock reaches `virtual_millis` from now.
    pub fn real_wait(&self, virtual_millis: i64) -> std::time::Duration {
        let ahead = virtual_millis.saturating_sub(self.now_millis()).max(0) as f64;
        std::time::Duration::from_secs_f64(ahead / self.scale / 1000.0)
    }
}

impl Clock for ScaledClock {
    fn now_millis(&self) -> i64 {
        let elapsed = self.started.elapsed().as_secs_f64() * 1000.0 * self.scale;
        self.anchor_millis.saturating_add(elapsed as i64)
    }
}
