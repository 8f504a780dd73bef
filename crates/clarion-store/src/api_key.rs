//! API keys: how they are drawn and how they are kept.
//!
//! A key is shown once, when it is created; the store keeps only its SHA-256 and a short
//! prefix (for telling keys apart in a listing). Nothing here touches the database: the
//! backends store and look up the [`KeyHash`].

use rand::Rng;
use rand::distr::Alphanumeric;
use sha2::{Digest, Sha256};

/// Keys look like `ck_` followed by 40 random alphanumerics (about 238 bits).
const KEY_PREFIX: &str = "ck_";
const KEY_RANDOM_CHARS: usize = 40;
/// How much of a key is kept in clear: the `ck_` and six random characters.
const SHOWN_PREFIX_LEN: usize = KEY_PREFIX.len() + 6;

/// A newly drawn API key, in clear. `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct NewApiKey(String);

impl NewApiKey {
    /// Draws a key from the operating system's generator (through `rand`'s thread RNG, a
    /// CSPRNG reseeded from the OS).
    pub fn generate() -> Self {
        let random: String = rand::rng()
            .sample_iter(&Alphanumeric)
            .take(KEY_RANDOM_CHARS)
            .map(char::from)
            .collect();
        Self(format!("{KEY_PREFIX}{random}"))
    }

    /// The key, to show its owner once.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// What the store keeps.
    pub fn hash(&self) -> KeyHash {
        KeyHash::of(&self.0)
    }

    /// The part kept in clear.
    pub fn shown_prefix(&self) -> &str {
        &self.0[..SHOWN_PREFIX_LEN]
    }
}

impl std::fmt::Debug for NewApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NewApiKey(..)")
    }
}

/// The SHA-256 of a key: what is stored, and what a presented key is looked up by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyHash(pub [u8; 32]);

impl KeyHash {
    /// The hash of a presented key.
    pub fn of(key: &str) -> Self {
        Self(Sha256::digest(key.as_bytes()).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_random_prefixed_and_hashed_as_presented() {
        let key = NewApiKey::generate();
        assert!(key.expose().starts_with("ck_"));
        assert_eq!(key.expose().len(), 43);
        assert_ne!(key, NewApiKey::generate());
        assert_eq!(key.hash(), KeyHash::of(key.expose()));
        assert_ne!(key.hash(), KeyHash::of("ck_other"));
        assert!(key.expose().starts_with(key.shown_prefix()));
        assert!(!format!("{key:?}").contains(key.expose()));
    }
}
