//! Throwaway databases for tests (feature `testing`): the store's conformance suite and the
//! integration tests open every database through [`TestDatabase::create`], so that one
//! environment variable runs them all on either backend.
//!
//! `CLARION_TEST_DATABASE_URL` names the backend:
//!
//! - unset, or a `sqlite:` URL: a fresh SQLite file in a temporary directory per database;
//! - `postgres://…` / `postgresql://…`: a server (e.g. `scripts/pg-test-server start`) on which
//!   each test database is created with a unique name (`CREATE DATABASE`, through the URL's
//!   database) and dropped when its [`TestDatabase`] is, so tests run in parallel (claims and
//!   due look-ups are deployment-wide: each test needs an empty database);
//! - any other scheme: reported in one line, and the tests run on SQLite.

#![allow(clippy::expect_used)] // test support: a database that cannot be made fails the test

use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::secret_keys::{SecretKey, SecretKeys};
use crate::{Result, Store, StoreOptions};

/// The environment variable naming the server the tests run on.
pub const TEST_DATABASE_URL: &str = "CLARION_TEST_DATABASE_URL";

/// One empty database of a test's own, and the key ring every handle on it shares (as every
/// node of one deployment shares one).
#[derive(Debug)]
pub struct TestDatabase {
    url: String,
    /// `None` only for [`TestDatabase::sqlite_with_key_file`].
    keys: Option<SecretKeys>,
    /// Keeps a SQLite database's temporary directory alive.
    _dir: Option<tempfile::TempDir>,
    /// A PostgreSQL database: (the server's URL to drop it through, its name).
    postgres: Option<(String, String)>,
}

impl TestDatabase {
    /// A new empty database on the backend `CLARION_TEST_DATABASE_URL` names (see the module
    /// documentation). Panics when the server cannot be reached: a test must not pass on the
    /// wrong backend.
    pub async fn create() -> Self {
        match postgres_server() {
            Some(server) => {
                let keys = Some(SecretKeys::new(SecretKey::generate()));
                let name = unique_database_name();
                create_postgres_database(&server, &name).await;
                Self {
                    url: with_database(&server, &name),
                    keys,
                    _dir: None,
                    postgres: Some((server, name)),
                }
            }
            None => Self::sqlite(),
        }
    }

    /// A fresh SQLite database (with its own key ring) whatever the environment names.
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        Self {
            url: format!("sqlite://{}", dir.path().join("clarion.db").display()),
            keys: Some(SecretKeys::new(SecretKey::generate())),
            _dir: Some(dir),
            postgres: None,
        }
    }

    /// A fresh SQLite database whatever the environment names, opened without a key ring, so
    /// that the store draws the key file beside it on first open (as `clarion serve` does
    /// without `CLARION_SECRET_KEY`): for tests of the files themselves.
    pub fn sqlite_with_key_file() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        Self {
            url: format!("sqlite://{}", dir.path().join("clarion.db").display()),
            keys: None,
            _dir: Some(dir),
            postgres: None,
        }
    }

    /// The database's URL (for `--database` and child processes).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The key ring the database's webhook secrets are sealed under (`None`: the key file).
    pub fn keys(&self) -> Option<&SecretKeys> {
        self.keys.as_ref()
    }

    /// The current key in the form `CLARION_SECRET_KEY` takes, for child processes; empty
    /// for a database that uses its key file.
    pub fn secret_key_env(&self) -> String {
        self.keys
            .as_ref()
            .map_or_else(String::new, |keys| keys.current().to_base64())
    }

    /// Whether the database is on PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        self.postgres.is_some()
    }

    /// Store options with this database's key ring.
    pub fn options(&self) -> StoreOptions {
        StoreOptions {
            secret_keys: self.keys.clone(),
            ..StoreOptions::default()
        }
    }

    /// A handle on the database (each call its own pool, as another process would have).
    pub async fn open(&self) -> Result<Store> {
        Store::connect_with(&self.url, self.options()).await
    }

    /// Runs one SQL statement on the database behind the store's back (a test that needs a
    /// row no API writes: a corrupt one); answers the rows it changed.
    pub async fn execute_raw(&self, sql: &str) -> std::result::Result<u64, sqlx::Error> {
        use sqlx::Connection;
        if self.is_postgres() {
            let mut connection = sqlx::PgConnection::connect(&self.url).await?;
            Ok(sqlx::query(sql)
                .execute(&mut connection)
                .await?
                .rows_affected())
        } else {
            let mut connection = sqlx::SqliteConnection::connect(&self.url).await?;
            Ok(sqlx::query(sql)
                .execute(&mut connection)
                .await?
                .rows_affected())
        }
    }
}

/// Drops a PostgreSQL test's database (`WITH (FORCE)`: the test's pools may still hold
/// connections). `Drop` cannot wait on the test's runtime, so a thread of its own does it.
impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some((server, name)) = self.postgres.take() else {
            return;
        };
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime to drop the database");
            runtime.block_on(async move {
                use sqlx::Connection;
                let mut admin = sqlx::PgConnection::connect(&server).await?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .execute(&mut admin)
                    .await?;
                admin.close().await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("testing: could not drop a test database");
        }
    }
}

/// Whether `url` names a PostgreSQL server.
pub fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// The server `CLARION_TEST_DATABASE_URL` names, when it is PostgreSQL.
pub fn postgres_server() -> Option<String> {
    static ANNOUNCE: Once = Once::new();
    let server = std::env::var(TEST_DATABASE_URL).ok()?;
    if is_postgres(&server) {
        return Some(server);
    }
    if !server.is_empty() && !server.starts_with("sqlite:") {
        ANNOUNCE.call_once(|| {
            let scheme = server.split(':').next().unwrap_or("");
            eprintln!(
                "testing: {TEST_DATABASE_URL} scheme `{scheme}` is not supported; running on SQLite"
            );
        });
    }
    None
}

async fn create_postgres_database(server: &str, name: &str) {
    use sqlx::Connection;
    let mut admin = sqlx::PgConnection::connect(server)
        .await
        .expect("connect to CLARION_TEST_DATABASE_URL");
    sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(&mut admin)
        .await
        .expect("create a test database");
    admin.close().await.expect("close the admin connection");
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
fn unique_database_name() -> String {
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
    use super::with_database;

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
