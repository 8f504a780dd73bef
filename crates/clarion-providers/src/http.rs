//! The HTTP client both providers' clients are built on.

use std::time::Duration;

/// A client with its own connection pool: every request limited to `timeout`, redirects
/// never followed (an answer that redirects is not the provider's answer), and Clarion's
/// user agent.
pub(crate) fn client(timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("clarion/", env!("CARGO_PKG_VERSION")))
        .build()
}
