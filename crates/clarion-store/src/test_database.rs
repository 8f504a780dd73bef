//! Throwaway PostgreSQL databases for tests (feature `test-database`, never in the binary).
//!
//! A test that runs against `CLARION_TEST_DATABASE_URL` (a server, e.g. one started by
//! `scripts/pg-test-server`) needs an empty database of its own: claims and due look-ups are
//! deployment-wide, and tests run in parallel. [`TestDatabase::create`] makes one with a
//! unique name through the URL's database; dropping the value drops the database. Lives in
//! the store because only the store may name the driver; the conformance suite and the
//! `clarion` crate's integration tests share it.

use crate::{Result, StoreError};

/// The variable naming the test server.
pub const SERVER_VARIABLE: &str = "CLARION_TEST_DATABASE_URL";

/// The PostgreSQL server tests should use: `CLARION_TEST_DATABASE_URL` when it is a
/// `postgres://` or `postgresql://` URL.
pub fn postgres_server() -> Option<String> {
    std::env::var(SERVER_VARIABLE)
        .ok()
        .filter(|url| is_postgres(url))
}

/// Whether `url` names a PostgreSQL server.
pub fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// An empty database of a test's own on a server, dropped (`WITH (FORCE)`: pools may still
/// hold connections) when this value is.
pub struct TestDatabase {
    url: String,
    server: String,
    name: String,
}

/// Written by hand: the URLs may carry a password.
impl std::fmt::Debug for TestDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestDatabase")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl TestDatabase {
    /// Creates a database with a name no other test (nor another run) uses on the server
    /// `server` names, connecting through the database in that URL.
    pub async fn create(server: &str) -> Result<Self> {
        use sqlx::Connection;
        let name = unique_name();
        let mut admin = sqlx::PgConnection::connect(server).await?;
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut admin)
            .await?;
        admin.close().await?;
        Ok(Self {
            url: with_database(server, &name),
            server: server.to_owned(),
            name,
        })
    }

    /// The database's URL.
    pub fn url(&self) -> &str {
        &self.url
    }
}

/// `Drop` cannot wait on the test's runtime (which may be a current-thread one), so a thread
/// with a runtime of its own drops the database.
impl Drop for TestDatabase {
    fn drop(&mut self) {
        let server = self.server.clone();
        let name = self.name.clone();
        let dropped = std::thread::spawn(move || -> Result<()> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|error| StoreError::Database(Box::new(error)))?;
            runtime.block_on(async move {
                use sqlx::Connection;
                let mut admin = sqlx::PgConnection::connect(&server).await?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .execute(&mut admin)
                    .await?;
                admin.close().await?;
                Ok(())
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("test database {}: could not drop it", self.name);
        }
    }
}

/// `url` with its database name replaced by `name` (the query string, if any, kept).
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let server = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{server}/{name}?{query}"),
        None => format!("{server}/{name}"),
    }
}

/// `url` with `password` as its password, for checks that no output shows it (the throwaway
/// server of `scripts/pg-test-server` trusts loopback, so any password is accepted).
pub fn with_password(url: &str, password: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (userinfo, host) = rest.split_once('@').unwrap_or(("postgres", rest));
    let user = userinfo.split(':').next().unwrap_or("postgres");
    format!("{scheme}://{user}:{password}@{host}")
}

/// A database name no other test (nor another run) uses.
fn unique_name() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "clarion_test_{}_{}_{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_test_database_url_replaces_only_the_database_name() {
        assert_eq!(
            with_database("postgres://u@127.0.0.1:5432/postgres", "c1"),
            "postgres://u@127.0.0.1:5432/c1"
        );
        assert_eq!(
            with_database("postgresql://u@h:1?sslmode=disable", "c2"),
            "postgresql://u@h:1/c2?sslmode=disable"
        );
    }
}
