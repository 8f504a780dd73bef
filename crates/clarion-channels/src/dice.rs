//! The simulator's only source of randomness: ChaCha8 seeded from the encounter's identity.
//!
//! The seed is derived with SplitMix64 from a stream tag and (sequence id, step, attempt,
//! channel), and values are drawn from the raw `next_u64` output with a multiply-shift
//! reduction. Nothing here goes through rand's distribution code, so the output is fixed by the
//! ChaCha8 specification and this file alone.

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};

use crate::outcome::Channel;

/// Independent random streams for one encounter identity.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Stream {
    /// [`crate::pick_outcome`].
    Pick,
    /// Everything [`crate::simulate`] generates: wording, timings, episodes.
    Script,
}

#[derive(Debug, Clone)]
pub(crate) struct Dice(ChaCha8Rng);

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Dice {
    pub(crate) fn new(
        stream: Stream,
        sequence_id: i64,
        step: u32,
        attempt: u32,
        channel: Channel,
    ) -> Self {
        let stream = match stream {
            Stream::Pick => 1,
            Stream::Script => 2,
        };
        let channel = match channel {
            Channel::Call => 1,
            Channel::Sms => 2,
        };
        let parts = [
            stream,
            u64::from_le_bytes(sequence_id.to_le_bytes()),
            u64::from(step),
            u64::from(attempt),
            channel,
        ];
        // "clarion\0" as the starting state.
        let mut state = u64::from_le_bytes(*b"clarion\0");
        for part in parts {
            state = splitmix64(state ^ part);
        }
        let mut seed = [0u8; 32];
        for chunk in seed.chunks_exact_mut(8) {
            state = splitmix64(state);
            chunk.copy_from_slice(&state.to_le_bytes());
        }
        Self(ChaCha8Rng::from_seed(seed))
    }

    /// A value in `0..n` (0 when `n` is 0).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.0.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// A value in `low..=high` (`low` when `high < low`).
    pub(crate) fn between(&mut self, low: u64, high: u64) -> u64 {
        if high <= low {
            return low;
        }
        low + self.below(high - low + 1)
    }

    /// True with probability `percent`/100.
    pub(crate) fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// An index into a list of `len` variants.
    pub(crate) fn index(&mut self, len: usize) -> usize {
        self.below(len as u64) as usize
    }

    /// One of `items`, which must not be empty.
    pub(crate) fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.index(items.len())]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_identity_gives_the_same_stream() {
        let mut a = Dice::new(Stream::Script, 42, 1, 1, Channel::Call);
        let mut b = Dice::new(Stream::Script, 42, 1, 1, Channel::Call);
        let mut c = Dice::new(Stream::Script, 43, 1, 1, Channel::Call);
        let a: Vec<u64> = (0..8).map(|_| a.below(1_000_000)).collect();
        let b: Vec<u64> = (0..8).map(|_| b.below(1_000_000)).collect();
        let c: Vec<u64> = (0..8).map(|_| c.below(1_000_000)).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn ranges_are_respected() {
        let mut dice = Dice::new(Stream::Pick, -7, 0, 0, Channel::Sms);
        for _ in 0..1_000 {
            assert!(dice.below(3) < 3);
            let v = dice.between(5, 25);
            assert!((5..=25).contains(&v));
        }
        assert_eq!(dice.below(0), 0);
        assert_eq!(dice.between(9, 9), 9);
    }
}
