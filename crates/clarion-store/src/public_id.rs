//! Public ids: what tenants see instead of the internal row ids.
//!
//! Row ids are global counters shared by every organisation, so handing them out would let a
//! tenant read other tenants' volumes from the gaps between its own ids. At the API (and in
//! the End of Sequence Report) every id is therefore passed through a keyed permutation: the
//! public id of internal id `n` of kind `k` for organisation `o` is `P(o, k, n)`, a bijection
//! of `[1, 2^48)` chosen by a key derived from the deployment's secret, the organisation and
//! the kind. Public ids stay plain integers (the report's `id` must be one; every value is
//! below 2^53, so JavaScript receivers read it exactly), they are stable for the life of the
//! database, two organisations see unrelated ids, and consecutive rows get ids with no visible
//! order or gap.
//!
//! The permutation is a balanced Feistel network over 48 bits (two 24-bit halves, 8 rounds,
//! SipHash-2-4 round functions under a 128-bit key derived by HMAC-SHA256 from the deployment
//! secret). It permutes `[0, 2^48)`; cycle walking (apply it again while the result is 0)
//! makes it a permutation of `[1, 2^48)`, so 0 and negative numbers never name anything.
//!
//! This hides volumes, it does not authorise: every id a tenant sends is decoded with *its*
//! key and then looked up scoped to its organisation, as before.

use std::hash::Hasher;
use std::sync::Arc;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use siphasher::sip::SipHasher24;

use crate::OrgId;

/// Public ids are below `2^PUBLIC_ID_BITS` (and at least 1).
pub const PUBLIC_ID_BITS: u32 = 48;
const DOMAIN: u64 = 1 << PUBLIC_ID_BITS;
const HALF_BITS: u32 = PUBLIC_ID_BITS / 2;
const HALF_MASK: u64 = (1 << HALF_BITS) - 1;
/// Four rounds already make a pseudo-random permutation (Luby–Rackoff); more cost little.
const ROUNDS: u8 = 8;

/// Length of the deployment secret, in bytes.
pub const SECRET_LEN: usize = 32;

/// What an id names. Each kind has its own permutation, so a sequence and an encounter with
/// the same row id do not share a public id either.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdKind {
    Sequence,
    Encounter,
    SequenceEvent,
    Template,
    Assistant,
    Endpoint,
    Message,
    Delivery,
    SuppressionChange,
    /// An API key, as a change's author (`api-key:<id>`) shows it.
    ApiKey,
    /// An entry of the PHI access log.
    AccessEntry,
    /// A bulk recovery of an endpoint's failed deliveries.
    Recovery,
    /// One of an organisation's caller numbers.
    CallerNumber,
}

impl IdKind {
    fn label(self) -> &'static [u8] {
        match self {
            Self::Sequence => b"sequence",
            Self::Encounter => b"encounter",
            Self::SequenceEvent => b"sequence-event",
            Self::Template => b"template",
            Self::Assistant => b"assistant",
            Self::Endpoint => b"endpoint",
            Self::Message => b"message",
            Self::Delivery => b"delivery",
            Self::SuppressionChange => b"suppression-change",
            Self::ApiKey => b"api-key",
            Self::AccessEntry => b"access-entry",
            Self::Recovery => b"recovery",
            Self::CallerNumber => b"caller-number",
        }
    }
}

/// The deployment's id codec: the secret every public id is derived from. `Debug` leaves the
/// secret out.
#[derive(Clone)]
pub struct IdCodec {
    secret: Arc<[u8; SECRET_LEN]>,
}

impl std::fmt::Debug for IdCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdCodec").finish_non_exhaustive()
    }
}

impl IdCodec {
    /// A codec over the deployment secret (see the `deployment_secret` table).
    pub fn new(secret: [u8; SECRET_LEN]) -> Self {
        Self {
            secret: Arc::new(secret),
        }
    }

    /// The ids as organisation `org` sees them.
    pub fn for_org(&self, org: OrgId) -> PublicIds {
        PublicIds {
            codec: self.clone(),
            org,
        }
    }

    fn permutation(&self, org: OrgId, kind: IdKind) -> Permutation {
        // The key cannot be refused: HMAC takes keys of any length.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.secret.as_slice())
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        mac.update(b"clarion public id v1\0");
        mac.update(&org.0.to_be_bytes());
        mac.update(kind.label());
        let digest = mac.finalize().into_bytes();
        let mut key = [0u8; 16];
        key.copy_from_slice(&digest[..16]);
        Permutation { key }
    }
}

/// One organisation's view of ids: encode internal ids on the way out, decode public ids on
/// the way in.
#[derive(Debug, Clone)]
pub struct PublicIds {
    codec: IdCodec,
    org: OrgId,
}

impl PublicIds {
    /// The organisation these ids belong to.
    pub fn org(&self) -> OrgId {
        self.org
    }

    /// The public id of internal id `internal`. Row ids start at 1 and would need 2^48
    /// inserts to leave the domain; such an id (or a non-positive one, which no row has)
    /// encodes to 0, which decodes to nothing.
    pub fn encode(&self, kind: IdKind, internal: impl Into<i64>) -> i64 {
        match u64::try_from(internal.into()) {
            Ok(n) if (1..DOMAIN).contains(&n) => {
                to_i64(self.codec.permutation(self.org, kind).forward_nonzero(n))
            }
            _ => 0,
        }
    }

    /// The internal id behind public id `public`; `None` when it is outside the id range
    /// (such a number names nothing: the caller answers 404).
    pub fn decode(&self, kind: IdKind, public: i64) -> Option<i64> {
        let p = u64::try_from(public)
            .ok()
            .filter(|p| (1..DOMAIN).contains(p))?;
        Some(to_i64(
            self.codec.permutation(self.org, kind).backward_nonzero(p),
        ))
    }
}

/// Values below 2^48 always fit.
fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or_else(|_| unreachable!("below 2^48"))
}

/// The Feistel network for one (organisation, kind).
struct Permutation {
    key: [u8; 16],
}

impl Permutation {
    fn round(&self, round: u8, half: u64) -> u64 {
        let mut hasher = SipHasher24::new_with_key(&self.key);
        hasher.write_u8(round);
        hasher.write_u64(half);
        hasher.finish() & HALF_MASK
    }

    fn forward(&self, x: u64) -> u64 {
        let (mut left, mut right) = (x >> HALF_BITS, x & HALF_MASK);
        for round in 0..ROUNDS {
            (left, right) = (right, left ^ self.round(round, right));
        }
        (left << HALF_BITS) | right
    }

    fn backward(&self, y: u64) -> u64 {
        let (mut left, mut right) = (y >> HALF_BITS, y & HALF_MASK);
        for round in (0..ROUNDS).rev() {
            (left, right) = (right ^ self.round(round, left), left);
        }
        (left << HALF_BITS) | right
    }

    /// Cycle walking: a permutation of `[0, 2^48)` restricted to `[1, 2^48)` by stepping
    /// over 0 (which has exactly one preimage, so this ends after at most two steps).
    fn forward_nonzero(&self, n: u64) -> u64 {
        let mut y = self.forward(n);
        while y == 0 {
            y = self.forward(y);
        }
        y
    }

    fn backward_nonzero(&self, p: u64) -> u64 {
        let mut x = self.backward(p);
        while x == 0 {
            x = self.backward(x);
        }
        x
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use rand::{Rng, SeedableRng};

    fn codec(seed: u8) -> IdCodec {
        IdCodec::new([seed; SECRET_LEN])
    }

    const KINDS: [IdKind; 11] = [
        IdKind::Sequence,
        IdKind::Encounter,
        IdKind::SequenceEvent,
        IdKind::Template,
        IdKind::Assistant,
        IdKind::Endpoint,
        IdKind::Message,
        IdKind::Delivery,
        IdKind::SuppressionChange,
        IdKind::ApiKey,
        IdKind::AccessEntry,
    ];

    #[test]
    fn round_trips_and_stays_in_range_for_random_and_edge_ids() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(17);
        let mut samples: Vec<i64> = vec![1, 2, 3, 1000, (1 << 48) - 2, (1 << 48) - 1];
        samples.extend((0..2000).map(|_| rng.random_range(1..(1i64 << 48))));
        for org in [OrgId(1), OrgId(2), OrgId(987_654)] {
            let ids = codec(7).for_org(org);
            for kind in KINDS {
                for &n in &samples {
                    let public = ids.encode(kind, n);
                    assert!((1..(1i64 << 48)).contains(&public), "{public} out of range");
                    assert!(public < (1i64 << 53), "not JSON-safe");
                    assert_eq!(ids.decode(kind, public), Some(n), "{kind:?} {n}");
                }
            }
        }
    }

    #[test]
    fn decoding_any_public_id_round_trips_back() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(18);
        let ids = codec(3).for_org(OrgId(5));
        for _ in 0..2000 {
            let public = rng.random_range(1..(1i64 << 48));
            let internal = ids.decode(IdKind::Sequence, public).unwrap();
            assert!((1..(1i64 << 48)).contains(&internal));
            assert_eq!(ids.encode(IdKind::Sequence, internal), public);
        }
    }

    #[test]
    fn is_a_bijection_on_a_small_sample() {
        let ids = codec(1).for_org(OrgId(1));
        let mut seen = std::collections::HashSet::new();
        for n in 1..=20_000 {
            assert!(
                seen.insert(ids.encode(IdKind::Delivery, n)),
                "collision at {n}"
            );
        }
    }

    #[test]
    fn out_of_range_numbers_name_nothing() {
        let ids = codec(1).for_org(OrgId(1));
        for public in [0, -1, i64::MIN, 1 << 48, i64::MAX] {
            assert_eq!(ids.decode(IdKind::Sequence, public), None, "{public}");
        }
        assert_eq!(ids.encode(IdKind::Sequence, 0), 0);
        assert_eq!(ids.encode(IdKind::Sequence, -5), 0);
        assert_eq!(ids.encode(IdKind::Sequence, 1_i64 << 48), 0);
    }

    #[test]
    fn organisations_kinds_and_deployments_see_unrelated_ids() {
        let a = codec(1).for_org(OrgId(1));
        let b = codec(1).for_org(OrgId(2));
        let other_deployment = codec(2).for_org(OrgId(1));
        let mut same_org = 0;
        let mut same_kind = 0;
        let mut same_deployment = 0;
        for n in 1..=1000 {
            same_org += usize::from(a.encode(IdKind::Sequence, n) == b.encode(IdKind::Sequence, n));
            same_kind +=
                usize::from(a.encode(IdKind::Sequence, n) == a.encode(IdKind::Encounter, n));
            same_deployment += usize::from(
                a.encode(IdKind::Sequence, n) == other_deployment.encode(IdKind::Sequence, n),
            );
        }
        // With 2^48 possible values, a single coincidence in 1000 would already be suspect.
        assert_eq!((same_org, same_kind, same_deployment), (0, 0, 0));
    }

    #[test]
    fn consecutive_rows_get_ids_with_no_order_or_gap() {
        let ids = codec(9).for_org(OrgId(3));
        let public: Vec<i64> = (1..=200).map(|n| ids.encode(IdKind::Sequence, n)).collect();
        let increasing = public.windows(2).filter(|w| w[1] > w[0]).count();
        // A monotonic mapping would give 199; a random one about half.
        assert!(
            (60..140).contains(&increasing),
            "{increasing} of 199 increase"
        );
        let small_steps = public
            .windows(2)
            .filter(|w| (w[1] - w[0]).unsigned_abs() < 1 << 32)
            .count();
        assert!(small_steps < 5, "{small_steps} neighbours are close");
    }

    #[test]
    fn debug_hides_the_secret() {
        let text = format!("{:?}", codec(0xAB).for_org(OrgId(1)));
        assert!(
            !text.contains("171") && !text.to_lowercase().contains("ab,"),
            "{text}"
        );
    }
}
