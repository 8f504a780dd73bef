//! The durable scheduler: turns enrollments into runs of encounters through the pure engine
//! (`clarion-engine`), the simulator channel (`clarion-channels`) and the outbox.

pub mod calling_rules;
pub mod clock;
pub mod definition;
pub mod eligibility;
pub mod fault;
pub mod report;
mod scheduler;
mod simulator;

pub use clock::ScaledClock;
pub use scheduler::{
    ContactCaps, Control, EnrollRequest, Enrolled, EraseOutcome, Erasure, ProviderCapacity,
    ProviderLimits, Scheduler, SchedulerConfig, SchedulerError, TwilioChannel, plan_for,
};
