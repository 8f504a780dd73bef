//! Fault injection for crash and outage tests.
//!
//! With `CLARION_CRASH_AT=<point>` in the environment, the process aborts (as `kill -9`
//! would stop it: no unwinding, no cleanup) the first time it reaches that point. The crash
//! tests use it to stop Clarion between each pair of steps of an encounter and check that,
//! after a restart, no report is lost and no contact is repeated.
//!
//! With `CLARION_OUTAGE_AT=<point>:<n>`, the first `n` times the process reaches that point
//! the transaction there fails as if the database had gone away
//! ([`clarion_store::StoreError::Unavailable`]) and is rolled back. The outage tests use it to
//! check that a live node rides out a database outage at the worst moment.
//!
//! Only with the `fault-injection` cargo feature (off by default; `cargo test` turns it on
//! through the `clarion` crate's dev-dependency, and `scripts/test` names it): without it
//! [`crash_point`] is an empty function, and a production binary neither reads
//! `CLARION_CRASH_AT` nor contains the name.

/// Every point a crash can be injected at, in the order an encounter passes them.
pub const CRASH_POINTS: &[&str] = &[
    // the encounter row is committed; the provider has not been asked
    "encounter-committed",
    // the provider was asked; its answer is not recorded yet
    "provider-asked",
    // the provider's answer is recorded; the encounter has not ended
    "encounter-requested",
    // the encounter ended (and the sequence with it, report queued); not yet delivered
    "encounter-ended",
];

/// Points reached only with a real provider (Vapi, Twilio), in order: the encounter was
/// claimed for its request (`encounter-claimed`); Vapi placed the call and its answer is not
/// recorded yet (`vapi-call-placed`).
pub const PROVIDER_CRASH_POINTS: &[&str] = &["encounter-claimed", "vapi-call-placed"];

/// Points at which a transaction can be made to fail as the database going away would.
pub const OUTAGE_POINTS: &[&str] = &[
    // the transaction recording a provider's (or the simulator's) answer, before its commit
    "recording-answer",
];

/// Fails as the database going away would (`Unavailable`) the first `n` times `point` is
/// reached with `CLARION_OUTAGE_AT=<point>:<n>`; the caller's transaction is then dropped,
/// so rolled back.
#[cfg(feature = "fault-injection")]
pub fn outage_point(point: &str) -> Result<(), clarion_store::StoreError> {
    if injected_outage(point) {
        return Err(clarion_store::StoreError::Unavailable(
            format!("database outage injected at {point}").into(),
        ));
    }
    Ok(())
}

#[cfg(feature = "fault-injection")]
fn injected_outage(point: &str) -> bool {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU32, Ordering};

    static TARGET: OnceLock<Option<(String, AtomicU32)>> = OnceLock::new();
    let target = TARGET.get_or_init(|| {
        let value = std::env::var("CLARION_OUTAGE_AT").ok()?;
        let (name, times) = value.split_once(':')?;
        Some((name.to_owned(), AtomicU32::new(times.parse().ok()?)))
    });
    match target {
        Some((name, left)) if name == point => left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok(),
        _ => false,
    }
}

/// Without the `fault-injection` feature: never fails (compiled away).
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn outage_point(_point: &str) -> Result<(), clarion_store::StoreError> {
    Ok(())
}

/// Aborts the process if `CLARION_CRASH_AT` names `point`.
#[cfg(feature = "fault-injection")]
pub fn crash_point(point: &str) {
    use std::sync::OnceLock;

    static TARGET: OnceLock<Option<String>> = OnceLock::new();
    let target = TARGET.get_or_init(|| std::env::var("CLARION_CRASH_AT").ok());
    if target.as_deref() == Some(point) {
        eprintln!("clarion: crash injected at {point}");
        std::process::abort();
    }
}

/// Without the `fault-injection` feature: nothing (compiled away).
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn crash_point(_point: &str) {}
