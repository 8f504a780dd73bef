//! PostgreSQL for the tests whose subject only exists there (several nodes on one database,
//! a database that goes away), beside `clarion_store::testing::TestDatabase` (a database of
//! the test's own on the server `CLARION_TEST_DATABASE_URL` names): `psql` for what an
//! administrator does to the server, and a TCP proxy in front of it that a test can cut, as a
//! restart or a network failure would. These tests are marked ignored (with the reason); `scripts/test` runs them
//! in its PostgreSQL half and they fail without a server.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::task::AbortHandle;

/// The server's URL; a test that needs one fails without it.
pub fn required_server(test: &str) -> String {
    clarion_store::testing::postgres_server().unwrap_or_else(|| {
        panic!(
            "{test} needs a PostgreSQL server: set CLARION_TEST_DATABASE_URL=$(scripts/pg-test-server start)"
        )
    })
}

/// A key for `CLARION_SECRET_KEY`, the same for every node of one test (as the nodes of one
/// deployment share one).
pub const SECRET_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// `psql` from `PATH`, or from the server installation `scripts/pg-test-server` uses.
fn psql() -> std::path::PathBuf {
    if let Some(found) = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("psql"))
            .find(|candidate| candidate.is_file())
    }) {
        return found;
    }
    let mut installed: Vec<std::path::PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|dirs| {
            dirs.filter_map(Result::ok)
                .map(|dir| dir.path().join("bin/psql"))
                .filter(|candidate| candidate.is_file())
                .collect()
        })
        .unwrap_or_default();
    installed.sort();
    installed
        .pop()
        .expect("psql (PostgreSQL's client) is installed")
}

/// Runs `sql` on the database `url` names; its output, unaligned.
pub fn run_sql(url: &str, sql: &str) -> String {
    let output = std::process::Command::new(psql())
        .args([
            "-X",
            "-q",
            "-t",
            "-A",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            url,
            "-c",
            sql,
        ])
        .output()
        .expect("psql runs");
    assert!(
        output.status.success(),
        "psql failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// The `host:port` a PostgreSQL URL names.
pub fn address_of(url: &str) -> SocketAddr {
    let rest = url.split_once("://").expect("a URL").1;
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    host_port.parse().expect("a numeric host:port")
}

/// `pg_terminate_backend` on every connection to the database `url` names but psql's own:
/// what an administrator, a proxy or a failover does to a node's connections.
pub fn terminate_connections(url: &str) -> usize {
    run_sql(
        url,
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .parse()
    .unwrap_or(0)
}

/// The database `url` names, reached through `proxy`, with `password` as its password (the
/// test server trusts loopback, so any is accepted, and a test can look for it in the logs).
pub fn url_through(url: &str, proxy: &FlakyProxy, password: &str) -> String {
    clarion_store::testing::with_password(url, password).replacen(
        &address_of(url).to_string(),
        &proxy.address.to_string(),
        1,
    )
}

/// A TCP proxy to the database server that a test can cut: [`FlakyProxy::cut`] drops every
/// connection through it and closes each new one at once (a server restart as its clients
/// see it: dead connections, then no new ones), [`FlakyProxy::restore`] lets them through
/// again.
pub struct FlakyProxy {
    pub address: SocketAddr,
    state: Arc<ProxyState>,
    accept: AbortHandle,
}

#[derive(Default)]
struct ProxyState {
    down: AtomicBool,
    connections: Mutex<Vec<AbortHandle>>,
    /// Connections refused while cut.
    refused: AtomicUsize,
}

impl FlakyProxy {
    pub async fn start(target: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let state = Arc::new(ProxyState::default());
        let accept = tokio::spawn({
            let state = state.clone();
            async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    if state.down.load(Ordering::SeqCst) {
                        state.refused.fetch_add(1, Ordering::SeqCst);
                        drop(client);
                        continue;
                    }
                    let relay = tokio::spawn(async move {
                        if let Ok(mut server) = tokio::net::TcpStream::connect(target).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                    });
                    let mut connections = state.connections.lock().unwrap();
                    connections.retain(|c| !c.is_finished());
                    connections.push(relay.abort_handle());
                }
            }
        })
        .abort_handle();
        Self {
            address,
            state,
            accept,
        }
    }

    /// Drops every connection through the proxy and refuses new ones until restored.
    pub fn cut(&self) {
        self.state.down.store(true, Ordering::SeqCst);
        for connection in self.state.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }

    pub fn restore(&self) {
        self.state.down.store(false, Ordering::SeqCst);
    }

    /// Connections refused while cut (the clients' tries).
    pub fn refused(&self) -> usize {
        self.state.refused.load(Ordering::SeqCst)
    }
}

impl Drop for FlakyProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}
