//! The operator dashboard's sessions, the PHI access log and the overview's aggregates
//! (SQLite).

use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use super::SqliteStore;
use crate::model::*;
use crate::stored::{OverviewRows, overview, unanswered_sql};
use crate::{ApiKeyId, OrgId, Result, SequenceId};

const SESSION_COLUMNS: &str = "id, org_id, api_key_id, created_at, last_seen_at, expires_at";

fn session_from_row(row: &SqliteRow) -> Result<UiSession> {
    Ok(UiSession {
        id: row.try_get("id")?,
        org_id: OrgId(row.try_get("org_id")?),
        api_key_id: ApiKeyId(row.try_get("api_key_id")?),
        created_at: row.try_get("created_at")?,
        last_seen_at: row.try_get("last_seen_at")?,
        expires_at: row.try_get("expires_at")?,
    })
}

const ACCESS_COLUMNS: &str = "id, org_id, at, actor, action, sequence_id, detail";

fn access_from_row(row: &SqliteRow) -> Result<AccessEntry> {
    Ok(AccessEntry {
        id: row.try_get("id")?,
        org_id: OrgId(row.try_get("org_id")?),
        at: row.try_get("at")?,
        actor: row.try_get("actor")?,
        action: row.try_get("action")?,
        sequence_id: row
            .try_get::<Option<i64>, _>("sequence_id")?
            .map(SequenceId),
        detail: row.try_get("detail")?,
    })
}

impl SqliteStore {
    pub(crate) async fn create_ui_session(&self, new: &NewUiSession<'_>) -> Result<i64> {
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM ui_sessions WHERE expires_at <= ?")
            .bind(new.now)
            .execute(&mut *tx.inner)
            .await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO ui_sessions (org_id, api_key_id, token_hash, created_at, last_seen_at, \
             expires_at) VALUES (?1, ?2, ?3, ?4, ?4, ?5) RETURNING id",
        )
        .bind(new.org_id.0)
        .bind(new.api_key_id.0)
        .bind(new.token_hash.as_slice())
        .bind(new.now)
        .bind(new.expires_at)
        .fetch_one(&mut *tx.inner)
        .await?;
        tx.commit().await?;
        Ok(id)
    }

    pub(crate) async fn touch_ui_session(
        &self,
        touch: &SessionTouch<'_>,
    ) -> Result<Option<UiSession>> {
        let mut tx = self.begin().await?;
        let row = sqlx::query(&format!(
            "UPDATE ui_sessions SET last_seen_at = ?2, expires_at = ?3 \
             WHERE token_hash = ?1 AND expires_at > ?2 AND created_at > ?4 \
             AND EXISTS (SELECT 1 FROM api_keys k WHERE k.id = ui_sessions.api_key_id \
                         AND k.revoked_at IS NULL) \
             RETURNING {SESSION_COLUMNS}"
        ))
        .bind(touch.token_hash.as_slice())
        .bind(touch.now)
        .bind(touch.expires_at)
        .bind(touch.created_after)
        .fetch_optional(&mut *tx.inner)
        .await?;
        tx.commit().await?;
        row.as_ref().map(session_from_row).transpose()
    }

    pub(crate) async fn delete_ui_session(&self, token_hash: &[u8; 32]) -> Result<bool> {
        let mut tx = self.begin().await?;
        let deleted = sqlx::query("DELETE FROM ui_sessions WHERE token_hash = ?")
            .bind(token_hash.as_slice())
            .execute(&mut *tx.inner)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(deleted > 0)
    }

    pub(crate) async fn record_access(&self, entry: &NewAccessEntry<'_>) -> Result<i64> {
        let mut tx = self.begin().await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO access_log (org_id, at, actor, action, sequence_id, detail) \
             VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(entry.org_id.0)
        .bind(entry.at)
        .bind(entry.actor)
        .bind(entry.action)
        .bind(entry.sequence_id.map(i64::from))
        .bind(entry.detail)
        .fetch_one(&mut *tx.inner)
        .await?;
        tx.commit().await?;
        Ok(id)
    }

    pub(crate) async fn access_log(
        &self,
        org: OrgId,
        after: Option<i64>,
        newest_first: bool,
        limit: u32,
    ) -> Result<Vec<AccessEntry>> {
        let (cursor, order, start) = if newest_first {
            ("<", "DESC", i64::MAX)
        } else {
            (">", "ASC", 0)
        };
        let rows = sqlx::query(&format!(
            "SELECT {ACCESS_COLUMNS} FROM access_log WHERE org_id = ? AND id {cursor} ? \
             ORDER BY id {order} LIMIT ?"
        ))
        .bind(org.0)
        .bind(after.unwrap_or(start))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(access_from_row).collect()
    }

    pub(crate) async fn overview(&self, query: &OverviewQuery) -> Result<Overview> {
        let OverviewQuery {
            org_id,
            since,
            until,
            max_slots,
        } = *query;
        let [counts, outcomes, slots, deliveries] = overview_statements();
        let counts: (i64, i64, i64) = sqlx::query_as(&counts)
            .bind(org_id.0)
            .bind(since)
            .bind(until)
            .fetch_one(&self.pool)
            .await?;
        let outcomes = sqlx::query_as(&outcomes)
            .bind(org_id.0)
            .bind(since)
            .bind(until)
            .fetch_all(&self.pool)
            .await?;
        let slots = sqlx::query_as(&slots)
            .bind(org_id.0)
            .bind(since)
            .bind(until)
            .bind(i64::from(max_slots) + 1)
            .fetch_all(&self.pool)
            .await?;
        let deliveries = sqlx::query_as(&deliveries)
            .bind(org_id.0)
            .bind(since)
            .bind(until)
            .fetch_all(&self.pool)
            .await?;
        overview(
            OverviewRows {
                counts,
                outcomes,
                slots,
                deliveries,
            },
            max_slots,
        )
    }
}

/// The overview's four statements (`?1` organisation, `?2`..`?3` the window, `?4` the heat
/// map's row limit): each reads one range of an index per organisation (the plan test below
/// pins them).
fn overview_statements() -> [String; 4] {
    [
        // Running and paused: one range each of `sequences_org_status`, proportional to the
        // live sequences; ended ones only in the window, through `sequences_org_ended`.
        "SELECT (SELECT COUNT(*) FROM sequences WHERE org_id = ?1 AND status = 'active'), \
                (SELECT COUNT(*) FROM sequences WHERE org_id = ?1 AND status = 'paused'), \
                (SELECT COUNT(*) FROM sequences WHERE org_id = ?1 AND status = 'ended' \
                 AND ended_at >= ?2 AND ended_at < ?3)"
            .to_owned(),
        // One range of the covering `encounters_org_ended`.
        format!(
            "SELECT ended_at / {MILLIS_PER_DAY} AS day, channel, outcome, COUNT(*) \
             FROM encounters \
             WHERE org_id = ?1 AND status = 'ended' AND ended_at >= ?2 AND ended_at < ?3 \
               AND outcome IS NOT NULL \
             GROUP BY day, channel, outcome"
        ),
        // The same range, answered calls only, each with its contact's zone: at most one row
        // per (zone, slot), whatever the number of calls.
        format!(
            "SELECT COALESCE(json_extract(s.contact, '$.time_zone'), '') AS zone, \
                    (COALESCE(e.claimed_at, e.created_at) / {HEAT_MAP_SLOT_MILLIS}) \
                      * {HEAT_MAP_SLOT_MILLIS} AS slot, \
                    COUNT(*) \
             FROM encounters e JOIN sequences s ON s.id = e.sequence_id \
             WHERE e.org_id = ?1 AND e.status = 'ended' AND e.ended_at >= ?2 AND e.ended_at < ?3 \
               AND e.channel = 'call' AND e.outcome IS NOT NULL \
               AND e.outcome NOT IN ({unanswered}) \
             GROUP BY zone, slot ORDER BY zone, slot LIMIT ?4",
            unanswered = unanswered_sql(),
        ),
        // The organisation's endpoints (`webhook_endpoints_org`), each one range of
        // `webhook_attempts_endpoint`; exact nearest-rank percentiles per day by window
        // functions, so the answer is one row per day.
        format!(
            "SELECT day, COUNT(*), SUM(ok), \
                    MAX(CASE WHEN rn = (50 * n + 99) / 100 THEN d END), \
                    MAX(CASE WHEN rn = (99 * n + 99) / 100 THEN d END) \
             FROM (SELECT a.attempted_at / {MILLIS_PER_DAY} AS day, a.duration_ms AS d, \
                          CASE WHEN a.status_code BETWEEN 200 AND 299 THEN 1 ELSE 0 END AS ok, \
                          ROW_NUMBER() OVER (PARTITION BY a.attempted_at / {MILLIS_PER_DAY} \
                                             ORDER BY a.duration_ms) AS rn, \
                          COUNT(*) OVER (PARTITION BY a.attempted_at / {MILLIS_PER_DAY}) AS n \
                   FROM webhook_endpoints w JOIN webhook_attempts a ON a.endpoint_id = w.id \
                   WHERE w.org_id = ?1 AND a.attempted_at >= ?2 AND a.attempted_at < ?3) \
             GROUP BY day ORDER BY day"
        ),
    ]
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::Store;

    #[tokio::test]
    async fn the_overview_reads_one_index_range_per_organisation() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("plan.db").display());
        let store = Store::connect(&url).await.unwrap();
        let expected: [&[&str]; 4] = [
            &["sequences_org_status", "sequences_org_ended"],
            &["COVERING INDEX encounters_org_ended"],
            &["INDEX encounters_org_ended", "INTEGER PRIMARY KEY"],
            &[
                "webhook_endpoints_org",
                "COVERING INDEX webhook_attempts_endpoint",
            ],
        ];
        for (statement, indexes) in overview_statements().iter().zip(expected) {
            let plan: Vec<String> = sqlx::query(&format!("EXPLAIN QUERY PLAN {statement}"))
                .bind(1_i64)
                .bind(0_i64)
                .bind(10_i64)
                .bind(10_i64)
                .fetch_all(&store.sqlite().pool)
                .await
                .unwrap()
                .iter()
                .map(|row| row.get::<String, _>("detail"))
                .collect();
            for index in indexes {
                assert!(
                    plan.iter().any(|step| step.contains(index)),
                    "{index} in {plan:?} for {statement}"
                );
            }
            // No whole-table scan of a stored table (a scan of a subquery's rows is fine).
            let tables = [
                "sequences",
                "encounters",
                "webhook_endpoints",
                "webhook_attempts",
            ];
            let aliases = ["s", "e", "w", "a"];
            assert!(
                !plan.iter().any(|step| step
                    .strip_prefix("SCAN ")
                    .is_some_and(|name| tables.contains(&name) || aliases.contains(&name))),
                "no table scan: {plan:?}"
            );
        }
    }
}
