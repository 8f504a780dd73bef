//! Debug output that never shows PHI.
//!
//! Phone numbers, message bodies, transcripts, summaries and template variables are PHI once
//! they are tied to a patient, and `Debug` output ends up in logs and panic messages. Types that
//! carry such values implement `Debug` by hand and print these wrappers instead of the values.

use std::fmt;

/// Prints `None`, or `Some(<redacted>)` without the value.
pub(crate) struct Opt<'a, T>(pub(crate) &'a Option<T>);

impl<T> fmt::Debug for Opt<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(_) => f.write_str("Some(<redacted>)"),
            None => f.write_str("None"),
        }
    }
}

/// Prints `<redacted>` in place of a value that is always present.
pub(crate) struct Hidden;

impl fmt::Debug for Hidden {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Prints only how many entries a collection holds: `<3 redacted>`.
pub(crate) struct Count(pub(crate) usize);

impl fmt::Debug for Count {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} redacted>", self.0)
    }
}
