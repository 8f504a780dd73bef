//! `clarion migrate-store --from URL --to URL`: moves a whole installation to another
//! database (e.g. SQLite to PostgreSQL), verified table by table.
//!
//! The copy itself is the store's ([`clarion_store::Store::copy_into`]); this command opens
//! both databases with the right key rings and prints the counts. Webhook endpoint secrets
//! are opened with the source's keys and sealed under the target's:
//!
//! - the source's ring is the configured one (`CLARION_SECRET_KEY`, `CLARION_PREVIOUS_SECRET_KEYS`
//!   or the configuration file), plus, for a SQLite source, the key file beside it when there
//!   is one. The source is opened without the connect-time re-sealing, so it is left exactly
//!   as it was and its own nodes can be started on it again, with the key they had;
//! - the target's is the configured one (PostgreSQL requires it; a SQLite target without one
//!   gets a key file of its own, as `clarion serve` would draw).
//!
//! Nothing printed names a URL, a credential, a secret or a row's content: table names,
//! counts, backends and the sealing key's id.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use clarion_store::secret_keys::{SecretKey, SecretKeys, key_file_path, read_key_file};
use clarion_store::{CopyReport, Store, StoreOptions};

use crate::config::Overrides;

/// `clarion migrate-store`.
#[derive(Debug, Args)]
pub struct MigrateStoreArgs {
    /// The installation to copy: sqlite://PATH (must exist) or postgres://… . Stop its nodes
    /// first: writes after the copy starts are not copied. It is only read (its schema is brought up to this version first, as `clarion serve` would).
    #[arg(long, value_name = "URL")]
    from: String,
    /// A new, empty database: sqlite://PATH or postgres://… . Refused if any table has a row.
    /// Start its nodes only after the copy, with the key the copy reports.
    #[arg(long, value_name = "URL")]
    to: String,
    /// A TOML configuration file laid over the embedded defaults (for `secret_key` and
    /// `previous_secret_keys`; the environment's CLARION_SECRET_KEY does as well).
    #[arg(long)]
    config: Option<PathBuf>,
}

/// Runs the copy and prints what it verified.
pub async fn run(args: MigrateStoreArgs) -> anyhow::Result<ExitCode> {
    let config = super::load_config(args.config.as_deref(), Overrides::default())?;
    let configured = config.store_options().secret_keys;
    if let Some(file) = Store::sqlite_file(&args.from)
        && !file.exists()
    {
        // Opening it would create an empty database and copy nothing.
        bail!("the source database file does not exist (check --from)");
    }
    let source_options = StoreOptions {
        secret_keys: Some(source_keys(configured, &args.from)?),
        reseal_secrets: false,
        ..config.store_options()
    };
    let source = Store::connect_with(&args.from, source_options)
        .await
        .context("opening the source database (--from)")?;
    let target = Store::connect_with(&args.to, config.store_options())
        .await
        .context("opening the target database (--to)")?;
    let started = std::time::Instant::now();
    let copied = source.copy_into(&target).await;
    source.close().await;
    target.close().await;
    let report = copied.context("copying the installation; nothing was written to the target")?;
    print!("{}", render(&report, started.elapsed()));
    Ok(ExitCode::SUCCESS)
}

/// The key ring that opens the source's secrets (module documentation).
fn source_keys(configured: Option<SecretKeys>, from: &str) -> anyhow::Result<SecretKeys> {
    let key_file = Store::sqlite_file(from)
        .map(|database| key_file_path(&database))
        .filter(|path| path.exists());
    let file_key = key_file
        .map(|path| read_key_file(&path))
        .transpose()
        .context("reading the source's secret key file")?;
    Ok(match (configured, file_key) {
        (Some(ring), Some(key)) => ring.with_previous([key]),
        (Some(ring), None) => ring,
        (None, Some(key)) => SecretKeys::new(key),
        // No key at all: a ring that opens nothing, so a source with endpoint secrets is
        // refused by the key they need, and no key file is drawn beside the source.
        (None, None) => SecretKeys::new(SecretKey::generate()),
    })
}

/// The verified counts, one table a line, and what the operator does next.
fn render(report: &CopyReport, elapsed: std::time::Duration) -> String {
    let width = report
        .tables
        .iter()
        .map(|table| table.table.len())
        .max()
        .unwrap_or(0)
        .max("table".len());
    let mut out = format!(
        "copied {} -> {} in {:.1} s; rows in the source and the target agree for every table:\n",
        report.from,
        report.to,
        elapsed.as_secs_f64()
    );
    out.push_str(&format!(
        "{:<width$}  {:>10}  {:>10}\n",
        "table", "source", "target"
    ));
    for table in &report.tables {
        out.push_str(&format!(
            "{:<width$}  {:>10}  {:>10}\n",
            table.table, table.source, table.target
        ));
    }
    let total = |side: fn(&clarion_store::TableCount) -> u64| -> u64 {
        report.tables.iter().map(side).sum()
    };
    out.push_str(&format!(
        "{:<width$}  {:>10}  {:>10}\n",
        "total",
        total(|table| table.source),
        total(|table| table.target)
    ));
    out.push_str(&format!(
        "webhook endpoint secrets are sealed under secret key {}: start the target's nodes with \
         that key (CLARION_SECRET_KEY; for a SQLite target without it, the key file beside the \
         database)\n",
        report.sealed_under
    ));
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_sqlite_sources_key_file_joins_the_configured_ring() {
        let dir = tempfile::tempdir().unwrap();
        let database = dir.path().join("clarion.db");
        let url = format!("sqlite://{}", database.display());
        let configured = SecretKeys::new(SecretKey::generate());
        // No file: the configured ring alone; nothing configured: a ring of a fresh key, and
        // still no file drawn beside the source.
        assert_eq!(
            source_keys(Some(configured.clone()), &url).unwrap(),
            configured
        );
        let blind = source_keys(None, &url).unwrap();
        assert_ne!(blind.current(), configured.current());
        assert!(!key_file_path(&database).exists());

        let file_key = SecretKey::generate();
        std::fs::write(key_file_path(&database), file_key.to_base64()).unwrap();
        assert_eq!(
            source_keys(None, &url).unwrap(),
            SecretKeys::new(file_key.clone())
        );
        assert_eq!(
            source_keys(Some(configured.clone()), &url).unwrap(),
            configured.clone().with_previous([file_key])
        );
        // A PostgreSQL source has no key file.
        assert_eq!(
            source_keys(Some(configured.clone()), "postgres://u@h/db").unwrap(),
            configured
        );
    }

    #[test]
    fn the_counts_are_printed_one_table_a_line_with_the_sealing_key() {
        let report = CopyReport {
            from: "sqlite",
            to: "postgres",
            tables: vec![
                clarion_store::TableCount {
                    table: "organizations",
                    source: 2,
                    target: 2,
                },
                clarion_store::TableCount {
                    table: "sequences",
                    source: 1200,
                    target: 1200,
                },
            ],
            sealed_under: "0123456789abcdef".to_owned(),
        };
        let printed = render(&report, std::time::Duration::from_millis(1500));
        let lines: Vec<&str> = printed.lines().collect();
        assert!(lines[0].starts_with("copied sqlite -> postgres in 1.5 s"));
        assert_eq!(lines[2], "organizations           2           2");
        assert_eq!(lines[3], "sequences            1200        1200");
        assert_eq!(lines[4], "total                1202        1202");
        assert!(lines[5].contains("0123456789abcdef"));
    }
}
