//! Fault injection for crash tests.
//!
//! With `CLARION_CRASH_AT=<point>` in the environment, the process aborts (as `kill -9`
//! would stop it: no unwinding, no cleanup) the first time it reaches that point. The crash
//! tests use it to stop Clarion between each pair of steps of an encounter and check that,
//! after a restart, no report is lost and no contact is repeated.
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
