//! The store's public data: rows, patches, options and the values callers pass in.
//!
//! Plain, backend-neutral data: nothing here names a database. Each backend maps its rows to
//! these types; the HTTP layer maps them to its JSON.

mod caller_numbers;
mod copy;
mod dashboard;
mod encounters;
mod options;
mod orgs;
mod outbox;
mod privacy;
mod sequences;
mod suppression;

pub use caller_numbers::*;
pub use copy::*;
pub use dashboard::*;
pub use encounters::*;
pub use options::*;
pub use orgs::*;
pub use outbox::*;
pub use privacy::*;
pub use sequences::*;
pub use suppression::*;
