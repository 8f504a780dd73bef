//! A whole installation copied into an empty database of either backend
//! ([`crate::Store::copy_into`], behind `clarion migrate-store`).
//!
//! **Invariant kept here: the target is the source, row for row.** Every table that holds the
//! installation's data is copied with every column as stored, ids included: public ids are
//! derived from row ids and the deployment secret (copied too), so the API and the reports
//! answer the same ids; a report queued but not yet delivered keeps its `webhook-id`, so
//! receivers deduplicate across the move; leases, due times, idempotency keys and
//! fingerprints, contact history and suppressions carry on where they were. Each table's id
//! counter is then moved past the highest id the source ever drew (not only the highest
//! still stored: a withdrawn encounter's id is never drawn again). The one column rewritten
//! is an endpoint secret's sealing (opened with the source's key ring, sealed under the
//! target's: see [`reseal`]).
//!
//! How: the source is read in one read-only snapshot (SQLite: one read transaction; PostgreSQL:
//! `REPEATABLE READ, READ ONLY`), each table in key order a page at a time; the target is
//! written in one transaction, parents before children, so the copy commits whole or not at
//! all. Before anything is written the schemas are compared with the table list below (a
//! table or column this build does not know stops the copy: a migration added it without
//! teaching the copy), and the target must hold no row of any copied table. Before the
//! commit, each table's rows in the source, rows copied and rows in the target must agree.
//!
//! Rows travel as [`Cell`]s typed by the column's declared [`Kind`], so a SQLite 0/1 flag
//! becomes a PostgreSQL boolean and back, and a NULL is bound with its column's type (which
//! PostgreSQL needs). The SQL for each backend differs only in its placeholders and in the
//! catalogue queries; the rest is written once by [`backend_io!`].

use std::collections::BTreeSet;

use crate::postgres::{PgStore, PgTx};
use crate::secret_keys::{Binding, OpenError, SecretKeys};
use crate::sqlite::{SqliteStore, SqliteTx};
use crate::{CopyError, CopyReport, EndpointId, OrgId, StoreError, TableCount};

/// How a column's values are read and bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Int,
    Text,
    Blob,
    /// SQLite's `INTEGER` 0/1, PostgreSQL's `BOOLEAN`.
    Bool,
}

use Kind::{Blob, Bool, Int, Text};

/// One copied table: its columns (the key's first), in the order the rows are copied.
#[derive(Debug)]
pub(crate) struct Table {
    pub(crate) name: &'static str,
    /// How many leading columns form the key the rows are read in order of.
    key: usize,
    columns: &'static [(&'static str, Kind)],
    /// Whether `id` is drawn by the database (SQLite `AUTOINCREMENT`, PostgreSQL identity),
    /// so the target's counter must be moved past the source's.
    identity: bool,
    /// Written by connecting (the deployment secret): replaced rather than refused.
    replaced: bool,
}

const fn table(name: &'static str, columns: &'static [(&'static str, Kind)]) -> Table {
    Table {
        name,
        key: 1,
        columns,
        identity: true,
        replaced: false,
    }
}

/// Every table with the installation's data, parents before children (the order the
/// target is written in, so every foreign key finds its row).
pub(crate) const TABLES: &[Table] = &[
    // The deployment secret: public ids are derived from it. Connecting to the target drew one
    // of its own; the source's replaces it.
    Table {
        key: 1,
        identity: false,
        replaced: true,
        ..table("deployment_secret", &[("id", Int), ("id_key", Blob)])
    },
    table(
        "organizations",
        &[
            ("id", Int),
            ("name", Text),
            ("created_at", Int),
            ("max_contacts_per_day", Int),
            ("max_contacts_per_week", Int),
            ("sms_help_text", Text),
            ("calling_rules", Text),
            ("retention_days", Int),
            ("eligibility_hook", Text),
            ("eligibility_hook_secret", Text),
            ("eligibility_hook_key_id", Text),
        ],
    ),
    table(
        "caller_numbers",
        &[
            ("id", Int),
            ("org_id", Int),
            ("channel", Text),
            ("number", Text),
            ("provider_id", Text),
            ("daily_cap", Int),
            ("enabled", Bool),
            ("last_chosen_at", Int),
            ("created_at", Int),
            ("updated_at", Int),
        ],
    ),
    table(
        "api_keys",
        &[
            ("id", Int),
            ("org_id", Int),
            ("key_hash", Blob),
            ("key_prefix", Text),
            ("created_at", Int),
            ("revoked_at", Int),
        ],
    ),
    Table {
        key: 2,
        identity: false,
        ..table(
            "organization_vapi_assistants",
            &[
                ("org_id", Int),
                ("vapi_assistant_id", Text),
                ("added_at", Int),
            ],
        )
    },
    Table {
        key: 2,
        identity: false,
        ..table(
            "organization_caller_numbers",
            &[
                ("channel", Text),
                ("number", Text),
                ("org_id", Int),
                ("provider_id", Text),
                ("added_at", Int),
            ],
        )
    },
    table(
        "webhook_endpoints",
        &[
            ("id", Int),
            ("org_id", Int),
            ("url", Text),
            ("description", Text),
            ("enabled", Bool),
            ("disabled_reason", Text),
            ("created_at", Int),
            ("updated_at", Int),
            ("deleted_at", Int),
            ("event_types", Text),
            ("failing_since", Int),
        ],
    ),
    table(
        SECRETS,
        &[
            ("id", Int),
            ("endpoint_id", Int),
            ("sealed_secret", Text),
            ("key_id", Text),
            ("created_at", Int),
            ("expires_at", Int),
        ],
    ),
    table(
        "assistants",
        &[
            ("id", Int),
            ("org_id", Int),
            ("name", Text),
            ("channel", Text),
            ("config", Text),
            ("custom_fields", Text),
            ("created_at", Int),
            ("updated_at", Int),
        ],
    ),
    table(
        "sequence_templates",
        &[
            ("id", Int),
            ("org_id", Int),
            ("name", Text),
            ("current_version", Int),
            ("created_at", Int),
            ("updated_at", Int),
        ],
    ),
    table(
        "sequence_template_versions",
        &[
            ("id", Int),
            ("template_id", Int),
            ("version", Int),
            ("definition", Text),
            ("created_at", Int),
        ],
    ),
    table(
        "sequences",
        &[
            ("id", Int),
            ("org_id", Int),
            ("template_id", Int),
            ("template_version_id", Int),
            ("phone_number", Text),
            ("contact", Text),
            ("variables", Text),
            ("simulation", Text),
            ("status", Text),
            ("state", Text),
            ("next_wake_at", Int),
            ("outcome_description", Text),
            ("allow_concurrent", Bool),
            ("idempotency_key", Text),
            ("idempotency_fingerprint", Text),
            ("created_at", Int),
            ("last_updated", Int),
            ("ended_at", Int),
            ("phi_purged_at", Int),
        ],
    ),
    table(
        "encounters",
        &[
            ("id", Int),
            ("org_id", Int),
            ("sequence_id", Int),
            ("step", Int),
            ("attempt", Int),
            ("channel", Text),
            ("assistant_id", Int),
            ("phone_number", Text),
            ("status", Text),
            ("provider_ref", Text),
            ("outcome", Text),
            ("report", Text),
            ("ends_at", Int),
            ("created_at", Int),
            ("ended_at", Int),
            ("provider_status", Text),
            ("conversation", Text),
            ("claimed_at", Int),
            ("sender", Text),
            ("capacity_wait_at", Int),
            ("caller_number_id", Int),
            ("caller_number", Text),
            ("caller_provider_id", Text),
            ("caller_number_at", Int),
        ],
    ),
    table(
        "sequence_events",
        &[
            ("id", Int),
            ("sequence_id", Int),
            ("at", Int),
            ("kind", Text),
            ("detail", Text),
        ],
    ),
    Table {
        key: 2,
        identity: false,
        ..table(
            "suppressions",
            &[
                ("org_id", Int),
                ("phone_number", Text),
                ("reason", Text),
                ("created_at", Int),
            ],
        )
    },
    table(
        "suppression_history",
        &[
            ("id", Int),
            ("org_id", Int),
            ("phone_number", Text),
            ("action", Text),
            ("reason", Text),
            ("actor", Text),
            ("at", Int),
            ("consent", Text),
        ],
    ),
    table(
        "webhook_messages",
        &[
            ("id", Int),
            ("org_id", Int),
            ("webhook_id", Text),
            ("event_type", Text),
            ("sequence_id", Int),
            ("is_test", Bool),
            ("body", Blob),
            ("created_at", Int),
        ],
    ),
    table(
        "webhook_deliveries",
        &[
            ("id", Int),
            ("org_id", Int),
            ("message_id", Int),
            ("endpoint_id", Int),
            ("status", Text),
            ("attempt_count", Int),
            ("next_attempt_at", Int),
            ("manual", Bool),
            ("lease_owner", Text),
            ("lease_expires_at", Int),
            ("created_at", Int),
            ("updated_at", Int),
        ],
    ),
    table(
        "webhook_attempts",
        &[
            ("id", Int),
            ("delivery_id", Int),
            ("endpoint_id", Int),
            ("attempt_number", Int),
            ("attempted_at", Int),
            ("status_code", Int),
            ("duration_ms", Int),
            ("error", Text),
            ("response_body", Blob),
        ],
    ),
    table(
        "webhook_recoveries",
        &[
            ("id", Int),
            ("org_id", Int),
            ("endpoint_id", Int),
            ("since", Int),
            ("until", Int),
            ("cursor", Int),
            ("requeued", Int),
            ("created_at", Int),
            ("finished_at", Int),
        ],
    ),
    // The PHI access log moves with the data it audits.
    table(
        "access_log",
        &[
            ("id", Int),
            ("org_id", Int),
            ("at", Int),
            ("actor", Text),
            ("action", Text),
            ("sequence_id", Int),
            ("detail", Text),
        ],
    ),
    Table {
        identity: false,
        ..table(
            "twilio_inbound_messages",
            &[("message_sid", Text), ("received_at", Int)],
        )
    },
];

/// The table whose rows are re-sealed on the way.
const SECRETS: &str = "webhook_endpoint_secrets";
/// The table whose rows may hold an eligibility hook secret, re-sealed like endpoint secrets.
const ORGANIZATIONS: &str = "organizations";
/// Where an `organizations` row holds the hook's sealed secret and its key id.
const HOOK_SECRET_COLUMN: usize = 9;
const HOOK_KEY_ID_COLUMN: usize = 10;

/// Tables in a schema that are deliberately not copied: the migrator's bookkeeping (the
/// target's own migrations wrote its own), and SQLite's `contact_locks`, whose rows are only
/// handles for a row lock, upserted before every contact check and never read (PostgreSQL
/// takes advisory locks instead and has no such table); and the dashboard's sign-in sessions,
/// which are short-lived and belong to the installation that issued them (everyone signs in
/// again on the target).
const NOT_COPIED: &[&str] = &["_sqlx_migrations", "contact_locks", "ui_sessions"];

/// Rows read from the source per page (and written per statement when the columns allow).
const PAGE_ROWS: usize = 1_000;

/// Bound values per statement, under both backends' limits (SQLite 32,766; PostgreSQL 65,535).
const MAX_PARAMETERS: usize = 30_000;

/// One value, typed by its column's [`Kind`].
#[derive(Debug, Clone, PartialEq)]
enum Cell {
    Int(Option<i64>),
    Text(Option<String>),
    Blob(Option<Vec<u8>>),
    Bool(Option<bool>),
}

impl Cell {
    fn int(&self) -> Option<i64> {
        match self {
            Cell::Int(value) => *value,
            _ => None,
        }
    }

    fn text(&self) -> Option<&str> {
        match self {
            Cell::Text(value) => value.as_deref(),
            _ => None,
        }
    }
}

type Row = Vec<Cell>;

/// A column list for SQL: every name quoted (`"at"` is a keyword to PostgreSQL).
fn column_list(table: &Table) -> String {
    table
        .columns
        .iter()
        .map(|(name, _)| format!("\"{name}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The next page of `table` in key order: after the key bound as parameters when `after`, the
/// first page otherwise. `param(n)` writes the backend's n-th placeholder.
fn page_sql(table: &Table, after: bool, param: fn(usize) -> String) -> String {
    let key: Vec<String> = table.columns[..table.key]
        .iter()
        .map(|(name, _)| format!("\"{name}\""))
        .collect();
    let filter = if after {
        let params: Vec<String> = (1..=table.key).map(param).collect();
        format!(" WHERE ({}) > ({})", key.join(", "), params.join(", "))
    } else {
        String::new()
    };
    format!(
        "SELECT {} FROM {}{filter} ORDER BY {} LIMIT {PAGE_ROWS}",
        column_list(table),
        table.name,
        key.join(", ")
    )
}

/// A multi-row `INSERT` of `rows` rows; a replaced table's row overwrites the one there.
fn insert_sql(table: &Table, rows: usize, param: fn(usize) -> String) -> String {
    let width = table.columns.len();
    let values: Vec<String> = (0..rows)
        .map(|row| {
            let params: Vec<String> = (1..=width)
                .map(|column| param(row * width + column))
                .collect();
            format!("({})", params.join(", "))
        })
        .collect();
    let mut sql = format!(
        "INSERT INTO {} ({}) VALUES {}",
        table.name,
        column_list(table),
        values.join(", ")
    );
    if table.replaced {
        let key = table.columns[0].0;
        let updates: Vec<String> = table.columns[table.key..]
            .iter()
            .map(|(name, _)| format!("\"{name}\" = excluded.\"{name}\""))
            .collect();
        sql.push_str(&format!(
            " ON CONFLICT (\"{key}\") DO UPDATE SET {}",
            updates.join(", ")
        ));
    }
    sql
}

/// Rows per `INSERT` for `table`.
fn rows_per_statement(table: &Table) -> usize {
    (MAX_PARAMETERS / table.columns.len().max(1)).clamp(1, PAGE_ROWS)
}

/// Writes, for one backend (`$db`, its placeholder style `$param` and its catalogue queries
/// for the tables and a table's columns), the functions that read a page, insert rows, count
/// and read the schema.
macro_rules! backend_io {
    ($module:ident, $db:ty, $param:expr, tables: $tables:ident, columns: $columns:ident) => {
        mod $module {
            use sqlx::Row as _;

            use super::{Cell, Kind, Row, Schema, Table, insert_sql, page_sql, rows_per_statement};
            use crate::StoreError;

            type Connection = <$db as sqlx::Database>::Connection;

            pub(super) fn param(n: usize) -> String {
                $param(n)
            }

            fn bind<'q>(
                query: sqlx::query::Query<'q, $db, <$db as sqlx::Database>::Arguments<'q>>,
                cell: &'q Cell,
            ) -> sqlx::query::Query<'q, $db, <$db as sqlx::Database>::Arguments<'q>> {
                match cell {
                    Cell::Int(value) => query.bind(*value),
                    Cell::Text(value) => query.bind(value.as_deref()),
                    Cell::Blob(value) => query.bind(value.as_deref()),
                    Cell::Bool(value) => query.bind(*value),
                }
            }

            /// Up to a page of rows after `after` (the previous page's last key).
            pub(super) async fn read_page(
                connection: &mut Connection,
                table: &Table,
                after: Option<&[Cell]>,
            ) -> Result<Vec<Row>, StoreError> {
                let sql = page_sql(table, after.is_some(), param);
                let mut query = sqlx::query(&sql);
                for cell in after.unwrap_or_default() {
                    query = bind(query, cell);
                }
                let rows = query.fetch_all(&mut *connection).await?;
                rows.iter()
                    .map(|row| {
                        table
                            .columns
                            .iter()
                            .enumerate()
                            .map(|(index, (_, kind))| {
                                Ok(match kind {
                                    Kind::Int => Cell::Int(row.try_get(index)?),
                                    Kind::Text => Cell::Text(row.try_get(index)?),
                                    Kind::Blob => Cell::Blob(row.try_get(index)?),
                                    Kind::Bool => Cell::Bool(row.try_get(index)?),
                                })
                            })
                            .collect::<Result<Row, StoreError>>()
                    })
                    .collect()
            }

            /// Inserts `rows`, as many per statement as the parameter limit allows.
            pub(super) async fn insert(
                connection: &mut Connection,
                table: &Table,
                rows: &[Row],
            ) -> Result<(), StoreError> {
                for chunk in rows.chunks(rows_per_statement(table)) {
                    let sql = insert_sql(table, chunk.len(), param);
                    let mut query = sqlx::query(&sql);
                    for cell in chunk.iter().flatten() {
                        query = bind(query, cell);
                    }
                    query.execute(&mut *connection).await?;
                }
                Ok(())
            }

            pub(super) async fn count(
                connection: &mut Connection,
                table: &Table,
            ) -> Result<u64, StoreError> {
                let count: i64 =
                    sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {}", table.name))
                        .fetch_one(&mut *connection)
                        .await?;
                Ok(u64::try_from(count).unwrap_or_default())
            }

            /// The tables there are and their columns, from the catalogue.
            pub(super) async fn schema(connection: &mut Connection) -> Result<Schema, StoreError> {
                let tables: Vec<String> = sqlx::query_scalar(super::$tables)
                    .fetch_all(&mut *connection)
                    .await?;
                let mut schema = Vec::with_capacity(tables.len());
                for table in tables {
                    let columns: Vec<String> = sqlx::query_scalar(super::$columns)
                        .bind(&table)
                        .fetch_all(&mut *connection)
                        .await?;
                    schema.push((table, columns.into_iter().collect()));
                }
                Ok(Schema(schema))
            }
        }
    };
}

/// The source, read in one snapshot.
enum Reader {
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>),
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
}

/// The target, written in one transaction.
enum Writer {
    Sqlite(SqliteTx),
    Postgres(PgTx),
}

/// A store as the copy sees it: its backend and the key ring its secrets are sealed with.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Side<'a> {
    Sqlite(&'a SqliteStore),
    Postgres(&'a PgStore),
}

impl Side<'_> {
    fn keys(&self) -> &SecretKeys {
        match self {
            Side::Sqlite(db) => &db.keys,
            Side::Postgres(db) => &db.keys,
        }
    }

    /// `sqlite` or `postgres`, for the report.
    fn backend(&self) -> &'static str {
        match self {
            Side::Sqlite(_) => "sqlite",
            Side::Postgres(_) => "postgres",
        }
    }

    async fn snapshot(&self) -> Result<Reader, StoreError> {
        match self {
            // A read transaction in WAL mode sees the database as of its first read.
            Side::Sqlite(db) => Ok(Reader::Sqlite(db.pool.begin().await?)),
            Side::Postgres(db) => {
                let mut tx = db.pool.begin().await?;
                sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    .execute(&mut *tx)
                    .await?;
                Ok(Reader::Postgres(tx))
            }
        }
    }

    async fn begin(&self) -> Result<Writer, StoreError> {
        match self {
            Side::Sqlite(db) => Ok(Writer::Sqlite(db.begin().await?)),
            Side::Postgres(db) => Ok(Writer::Postgres(db.begin().await?)),
        }
    }
}

/// The catalogue queries, which differ by backend: the tables there are and a table's
/// columns.
const SQLITE_TABLES: &str = "SELECT name FROM sqlite_master WHERE type = 'table' \
     AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'";
const SQLITE_COLUMNS: &str = "SELECT name FROM pragma_table_info(?1)";
const PG_TABLES: &str = "SELECT table_name::text FROM information_schema.tables \
     WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'";
const PG_COLUMNS: &str = "SELECT column_name::text FROM information_schema.columns \
     WHERE table_schema = current_schema() AND table_name = $1";

// SQLite's placeholders are anonymous `?`, bound in order (each is used once): a numbered
// `?NNN` is looked up by a linear scan of the statement's parameter names on every bind, which
// made a 20,000-value INSERT quadratic (a copy of 900,000 rows took 150 s instead of 20).
backend_io!(
    sqlite_io,
    sqlx::Sqlite,
    |_: usize| "?".to_owned(),
    tables: SQLITE_TABLES,
    columns: SQLITE_COLUMNS
);
backend_io!(
    pg_io,
    sqlx::Postgres,
    |n: usize| format!("${n}"),
    tables: PG_TABLES,
    columns: PG_COLUMNS
);

impl Reader {
    async fn read_page(
        &mut self,
        table: &Table,
        after: Option<&[Cell]>,
    ) -> Result<Vec<Row>, StoreError> {
        match self {
            Reader::Sqlite(tx) => sqlite_io::read_page(tx, table, after).await,
            Reader::Postgres(tx) => pg_io::read_page(tx, table, after).await,
        }
    }

    async fn count(&mut self, table: &Table) -> Result<u64, StoreError> {
        match self {
            Reader::Sqlite(tx) => sqlite_io::count(tx, table).await,
            Reader::Postgres(tx) => pg_io::count(tx, table).await,
        }
    }

    async fn schema(&mut self) -> Result<Schema, StoreError> {
        match self {
            Reader::Sqlite(tx) => sqlite_io::schema(tx).await,
            Reader::Postgres(tx) => pg_io::schema(tx).await,
        }
    }

    /// The highest id `table`'s counter has drawn (0 when none): SQLite's `sqlite_sequence`,
    /// PostgreSQL's identity sequence.
    async fn high_water(&mut self, table: &Table) -> Result<i64, StoreError> {
        match self {
            Reader::Sqlite(tx) => {
                let seq: Option<i64> =
                    sqlx::query_scalar("SELECT seq FROM sqlite_sequence WHERE name = ?1")
                        .bind(table.name)
                        .fetch_optional(&mut **tx)
                        .await?;
                Ok(seq.unwrap_or(0))
            }
            Reader::Postgres(tx) => {
                let sequence: Option<String> =
                    sqlx::query_scalar("SELECT pg_get_serial_sequence($1, 'id')")
                        .bind(table.name)
                        .fetch_one(&mut **tx)
                        .await?;
                let Some(sequence) = sequence else {
                    return Ok(0);
                };
                // The name comes from the catalogue, already quoted where it needs to be.
                let last: i64 = sqlx::query_scalar(&format!(
                    "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM {sequence}"
                ))
                .fetch_one(&mut **tx)
                .await?;
                Ok(last)
            }
        }
    }

    async fn finish(self) -> Result<(), StoreError> {
        match self {
            Reader::Sqlite(tx) => tx.rollback().await?,
            Reader::Postgres(tx) => tx.rollback().await?,
        }
        Ok(())
    }
}

impl Writer {
    async fn insert(&mut self, table: &Table, rows: &[Row]) -> Result<(), StoreError> {
        match self {
            Writer::Sqlite(tx) => sqlite_io::insert(&mut tx.inner, table, rows).await,
            Writer::Postgres(tx) => pg_io::insert(&mut tx.inner, table, rows).await,
        }
    }

    async fn count(&mut self, table: &Table) -> Result<u64, StoreError> {
        match self {
            Writer::Sqlite(tx) => sqlite_io::count(&mut tx.inner, table).await,
            Writer::Postgres(tx) => pg_io::count(&mut tx.inner, table).await,
        }
    }

    async fn schema(&mut self) -> Result<Schema, StoreError> {
        match self {
            Writer::Sqlite(tx) => sqlite_io::schema(&mut tx.inner).await,
            Writer::Postgres(tx) => pg_io::schema(&mut tx.inner).await,
        }
    }

    /// Moves `table`'s id counter so that the next id drawn is above `high`.
    async fn advance(&mut self, table: &Table, high: i64) -> Result<(), StoreError> {
        if high <= 0 {
            return Ok(());
        }
        match self {
            // Inserting explicit ids already moved `sqlite_sequence` to the highest copied;
            // the source may have drawn higher ones since deleted. (`sqlite_sequence` has no
            // unique name: update the row, or add it if the table has none yet.)
            Writer::Sqlite(tx) => {
                let updated =
                    sqlx::query("UPDATE sqlite_sequence SET seq = MAX(seq, ?1) WHERE name = ?2")
                        .bind(high)
                        .bind(table.name)
                        .execute(&mut *tx.inner)
                        .await?;
                if updated.rows_affected() == 0 {
                    sqlx::query("INSERT INTO sqlite_sequence (name, seq) VALUES (?1, ?2)")
                        .bind(table.name)
                        .bind(high)
                        .execute(&mut *tx.inner)
                        .await?;
                }
            }
            // Identity columns draw from their sequence whatever ids were inserted by hand.
            Writer::Postgres(tx) => {
                sqlx::query("SELECT setval(pg_get_serial_sequence($1, 'id'), $2)")
                    .bind(table.name)
                    .bind(high)
                    .execute(&mut *tx.inner)
                    .await?;
            }
        }
        Ok(())
    }

    async fn commit(self) -> Result<(), StoreError> {
        match self {
            Writer::Sqlite(tx) => tx.commit().await,
            Writer::Postgres(tx) => tx.commit().await,
        }
    }
}

/// The tables of a database and their columns.
#[derive(Debug)]
struct Schema(Vec<(String, BTreeSet<String>)>);

impl Schema {
    /// Whether this schema is the one the copy knows: every copied table with exactly its
    /// columns, and no other table but the ones deliberately left.
    fn check(&self, side: &'static str) -> Result<(), CopyError> {
        for (name, columns) in &self.0 {
            if NOT_COPIED.contains(&name.as_str()) {
                continue;
            }
            let Some(table) = TABLES.iter().find(|table| table.name == name) else {
                return Err(CopyError::SchemaMismatch {
                    side,
                    table: name.clone(),
                });
            };
            let expected: BTreeSet<String> = table
                .columns
                .iter()
                .map(|(column, _)| (*column).to_owned())
                .collect();
            if *columns != expected {
                return Err(CopyError::SchemaMismatch {
                    side,
                    table: name.clone(),
                });
            }
        }
        if let Some(missing) = TABLES
            .iter()
            .find(|table| !self.0.iter().any(|(name, _)| name == table.name))
        {
            return Err(CopyError::SchemaMismatch {
                side,
                table: missing.name.to_owned(),
            });
        }
        Ok(())
    }
}

/// An endpoint secret row (`id, endpoint_id, sealed_secret, key_id, …`) opened with the
/// source's key ring and sealed under the target's current key. Each sealed value is bound
/// to its endpoint id (kept) and key id, so it must be re-sealed when the target's key
/// differs; it is re-sealed always, which also seals a secret an old build stored in the
/// clear. A secret that does not open stops the copy: the error names the key or the
/// endpoint, never the secret.
fn reseal(row: &mut Row, from: &SecretKeys, to: &SecretKeys) -> Result<(), CopyError> {
    let endpoint = row
        .get(1)
        .and_then(Cell::int)
        .map(EndpointId)
        .ok_or(StoreError::Corrupt("endpoint secret without an endpoint"))?;
    let key_id = row.get(3).and_then(Cell::text).map(str::to_owned);
    let sealed = row
        .get(2)
        .and_then(Cell::text)
        .ok_or(StoreError::Corrupt("endpoint secret without a value"))?;
    let secret = from
        .open(endpoint, key_id.as_deref(), sealed)
        .map_err(|error| match error {
            OpenError::UnknownKey(key_id) => CopyError::SecretKeyMissing { key_id },
            OpenError::Damaged => CopyError::SecretDoesNotOpen {
                endpoint_id: endpoint.0,
            },
        })?;
    let resealed = to.seal(endpoint, &secret)?;
    row[2] = Cell::Text(Some(resealed.text));
    row[3] = Cell::Text(Some(resealed.key_id));
    Ok(())
}

/// An organisation row's eligibility hook secret (if any), opened with the source's key ring
/// and sealed under the target's, bound to the organisation id (kept).
fn reseal_hook(row: &mut Row, from: &SecretKeys, to: &SecretKeys) -> Result<(), CopyError> {
    let Some(sealed) = row.get(HOOK_SECRET_COLUMN).and_then(Cell::text) else {
        return Ok(());
    };
    let org = row
        .first()
        .and_then(Cell::int)
        .map(OrgId)
        .ok_or(StoreError::Corrupt("organisation without an id"))?;
    let key_id = row.get(HOOK_KEY_ID_COLUMN).and_then(Cell::text);
    let binding = Binding::EligibilityHook(org);
    let secret = from
        .open(binding, key_id, sealed)
        .map_err(|error| match error {
            OpenError::UnknownKey(key_id) => CopyError::SecretKeyMissing { key_id },
            OpenError::Damaged => CopyError::HookSecretDoesNotOpen { org_id: org.0 },
        })?;
    let resealed = to.seal(binding, &secret)?;
    row[HOOK_SECRET_COLUMN] = Cell::Text(Some(resealed.text));
    row[HOOK_KEY_ID_COLUMN] = Cell::Text(Some(resealed.key_id));
    Ok(())
}

/// Each copied table's rows, read in one snapshot, in copy order.
pub(crate) async fn table_counts(side: Side<'_>) -> Result<Vec<(&'static str, u64)>, StoreError> {
    let mut reader = side.snapshot().await?;
    let mut counts = Vec::with_capacity(TABLES.len());
    for table in TABLES {
        counts.push((table.name, reader.count(table).await?));
    }
    reader.finish().await?;
    Ok(counts)
}

/// Copies every table of `source` into `target` (see the module documentation).
pub(crate) async fn copy(source: Side<'_>, target: Side<'_>) -> Result<CopyReport, CopyError> {
    let mut reader = source.snapshot().await?;
    let mut writer = target.begin().await?;
    reader.schema().await?.check("source")?;
    writer.schema().await?.check("target")?;
    for table in TABLES.iter().filter(|table| !table.replaced) {
        // Counting stops at the first table with rows: `organizations`, on any database
        // that was ever used.
        if writer.count(table).await? > 0 {
            return Err(CopyError::TargetNotEmpty { table: table.name });
        }
    }
    let mut tables = Vec::with_capacity(TABLES.len());
    for table in TABLES {
        let in_source = reader.count(table).await?;
        let mut copied = 0u64;
        let mut highest_id = 0i64;
        let mut after: Option<Row> = None;
        loop {
            let mut page = reader.read_page(table, after.as_deref()).await?;
            let Some(last) = page.last() else { break };
            after = Some(last[..table.key].to_vec());
            if table.identity {
                highest_id = highest_id.max(last[0].int().unwrap_or(0));
            }
            if table.name == SECRETS {
                for row in &mut page {
                    reseal(row, source.keys(), target.keys())?;
                }
            }
            if table.name == ORGANIZATIONS {
                for row in &mut page {
                    reseal_hook(row, source.keys(), target.keys())?;
                }
            }
            writer.insert(table, &page).await?;
            copied += page.len() as u64;
        }
        if table.identity {
            let high = reader.high_water(table).await?.max(highest_id);
            writer.advance(table, high).await?;
        }
        let in_target = writer.count(table).await?;
        if in_source != copied || in_target != copied {
            return Err(CopyError::CountMismatch {
                table: table.name,
                in_source,
                copied,
                in_target,
            });
        }
        tracing::info!(table = table.name, rows = copied, "copied");
        tables.push(TableCount {
            table: table.name,
            source: in_source,
            target: in_target,
        });
    }
    writer.commit().await?;
    reader.finish().await?;
    Ok(CopyReport {
        from: source.backend(),
        to: target.backend(),
        tables,
        sealed_under: target.keys().current().id(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn find(name: &str) -> &'static Table {
        TABLES.iter().find(|table| table.name == name).unwrap()
    }

    #[test]
    fn pages_are_read_after_the_last_key_in_key_order() {
        let suppressions = find("suppressions");
        assert_eq!(
            page_sql(suppressions, true, pg_io::param),
            "SELECT \"org_id\", \"phone_number\", \"reason\", \"created_at\" FROM suppressions \
             WHERE (\"org_id\", \"phone_number\") > ($1, $2) ORDER BY \"org_id\", \"phone_number\" \
             LIMIT 1000"
        );
        assert_eq!(
            page_sql(find("organizations"), false, sqlite_io::param),
            "SELECT \"id\", \"name\", \"created_at\", \"max_contacts_per_day\", \
             \"max_contacts_per_week\", \"sms_help_text\", \"calling_rules\", \"retention_days\", \"eligibility_hook\", \"eligibility_hook_secret\", \
             \"eligibility_hook_key_id\" FROM organizations \
             ORDER BY \"id\" \
             LIMIT 1000"
        );
    }

    #[test]
    fn inserts_number_every_value_and_replace_only_the_deployment_secret() {
        let sql = insert_sql(find("deployment_secret"), 1, pg_io::param);
        assert_eq!(
            sql,
            "INSERT INTO deployment_secret (\"id\", \"id_key\") VALUES ($1, $2) \
             ON CONFLICT (\"id\") DO UPDATE SET \"id_key\" = excluded.\"id_key\""
        );
        let sql = insert_sql(find("api_keys"), 2, sqlite_io::param);
        assert!(sql.ends_with("VALUES (?, ?, ?, ?, ?, ?), (?, ?, ?, ?, ?, ?)"));
        assert!(!sql.contains("ON CONFLICT"));
    }

    #[test]
    fn a_statement_stays_under_both_parameter_limits() {
        for table in TABLES {
            assert!(rows_per_statement(table) * table.columns.len() <= 32_766);
            assert!(table.key >= 1 && table.key <= table.columns.len());
            // Identity tables are paged by `id` alone, their first column.
            assert!(!table.identity || (table.key == 1 && table.columns[0].0 == "id"));
        }
    }

    #[test]
    fn a_secret_is_resealed_for_its_endpoint_under_the_target_key() {
        use crate::secret_keys::SecretKey;
        let from = SecretKeys::new(SecretKey::generate());
        let to = SecretKeys::new(SecretKey::generate());
        let sealed = from.seal(EndpointId(7), "whsec_c2VjcmV0").unwrap();
        // `id, endpoint_id, sealed_secret, key_id, created_at, expires_at`, as read.
        let stored = || {
            vec![
                Cell::Int(Some(3)),
                Cell::Int(Some(7)),
                Cell::Text(Some(sealed.text.clone())),
                Cell::Text(Some(sealed.key_id.clone())),
                Cell::Int(Some(0)),
                Cell::Int(None),
            ]
        };
        let mut row = stored();
        reseal(&mut row, &from, &to).unwrap();
        assert_eq!(row[3], Cell::Text(Some(to.current().id())));
        let opened = to
            .open(EndpointId(7), row[3].text(), row[2].text().unwrap())
            .unwrap();
        assert_eq!(opened, "whsec_c2VjcmV0");

        // A ring without the sealing key: refused by the key's id, the secret never shown.
        let mut row = stored();
        let error = reseal(&mut row, &to, &to).unwrap_err();
        assert!(
            matches!(&error, CopyError::SecretKeyMissing { key_id } if *key_id == sealed.key_id)
        );
        assert!(!error.to_string().contains("whsec_"));
        // Moved to another endpoint's row: does not open.
        row[1] = Cell::Int(Some(8));
        let error = reseal(&mut row, &from, &to).unwrap_err();
        assert!(matches!(
            error,
            CopyError::SecretDoesNotOpen { endpoint_id: 8 }
        ));
    }

    #[test]
    fn a_hook_secret_is_resealed_for_its_organisation_and_a_row_without_one_is_left_alone() {
        use crate::secret_keys::SecretKey;
        let from = SecretKeys::new(SecretKey::generate());
        let to = SecretKeys::new(SecretKey::generate());
        let sealed = from
            .seal(Binding::EligibilityHook(OrgId(4)), "whsec_aG9vaw==")
            .unwrap();
        let columns = find(ORGANIZATIONS).columns;
        assert_eq!(columns[HOOK_SECRET_COLUMN].0, "eligibility_hook_secret");
        assert_eq!(columns[HOOK_KEY_ID_COLUMN].0, "eligibility_hook_key_id");
        let row = |secret: Option<String>, key: Option<String>| {
            let mut row = vec![Cell::Int(Some(4))];
            row.extend((1..HOOK_SECRET_COLUMN).map(|_| Cell::Text(None)));
            row.push(Cell::Text(secret));
            row.push(Cell::Text(key));
            row
        };
        let mut with = row(Some(sealed.text.clone()), Some(sealed.key_id.clone()));
        reseal_hook(&mut with, &from, &to).unwrap();
        let opened = to
            .open(
                Binding::EligibilityHook(OrgId(4)),
                with[HOOK_KEY_ID_COLUMN].text(),
                with[HOOK_SECRET_COLUMN].text().unwrap(),
            )
            .unwrap();
        assert_eq!(opened, "whsec_aG9vaw==");
        // Not an endpoint's secret, nor another organisation's.
        assert!(
            to.open(
                EndpointId(4),
                with[HOOK_KEY_ID_COLUMN].text(),
                with[HOOK_SECRET_COLUMN].text().unwrap()
            )
            .is_err()
        );
        let mut moved = row(Some(sealed.text.clone()), Some(sealed.key_id.clone()));
        moved[0] = Cell::Int(Some(5));
        assert!(matches!(
            reseal_hook(&mut moved, &from, &to),
            Err(CopyError::HookSecretDoesNotOpen { org_id: 5 })
        ));
        let mut without = row(None, None);
        reseal_hook(&mut without, &from, &to).unwrap();
        assert_eq!(without, row(None, None));
    }
}
