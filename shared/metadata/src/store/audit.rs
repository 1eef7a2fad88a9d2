//! The audit trail: appended in batches, each entry chained to the one before.

use super::*;

/// The hash the first entry chains to.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// A duplicate key: another node appended the same sequence number first.
fn is_duplicate(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|code| matches!(code.as_ref(), "23505" | "23000" | "1555" | "2067"))
}

fn audit_from_row(row: &AnyRow) -> Result<AuditRecord> {
    Ok(AuditRecord {
        seq: row.try_get("seq").map_err(db_err)?,
        at_ms: row.try_get("at_ms").map_err(db_err)?,
        event: AuditEvent {
            node: row.try_get("node").map_err(db_err)?,
            actor: row.try_get("actor").map_err(db_err)?,
            source: row.try_get("source").map_err(db_err)?,
            action: row.try_get("action").map_err(db_err)?,
            target: row.try_get("target").map_err(db_err)?,
            detail: row.try_get("detail").map_err(db_err)?,
        },
        prev_hash: row.try_get("prev_hash").map_err(db_err)?,
        hash: row.try_get("hash").map_err(db_err)?,
    })
}

impl Metadata {
    /// Appends `event` after the last entry, chained to it ([`Self::append_audit_batch`]).
    pub async fn append_audit(&self, event: &AuditEvent) -> Result<AuditRecord> {
        let mut appended = self.append_audit_batch(std::slice::from_ref(event)).await?;
        appended.pop().ok_or_else(|| Error::Metadata {
            source: "the audit append returned no entry".into(),
            retryable: true,
        })
    }

    /// Appends `events`, in order, after the last entry, each chained to the one before, in
    /// one transaction. Two nodes appending at once both read the same last entry; the second
    /// to insert that sequence number fails on the key, rolls back and is made again after
    /// the first, so the chain stays one line.
    pub async fn append_audit_batch(&self, events: &[AuditEvent]) -> Result<Vec<AuditRecord>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        for _ in 0..50 {
            match self.try_append_audit(events).await {
                Ok(records) => return Ok(records),
                Err(e) if is_duplicate(&e) => tokio::time::sleep(Duration::from_millis(1)).await,
                Err(e) => return Err(db_err(e)),
            }
        }
        Err(Error::Unavailable(
            "the audit trail is too busy to append to; retry".into(),
        ))
    }

    async fn try_append_audit(
        &self,
        events: &[AuditEvent],
    ) -> std::result::Result<Vec<AuditRecord>, sqlx::Error> {
        let mut tx = self.writer_uncached().begin().await?;
        let last =
            sqlx::query(self.sql("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1"))
                .fetch_optional(&mut *tx)
                .await?;
        let (mut seq, mut prev_hash) = match &last {
            Some(row) => (
                row.try_get::<i64, _>("seq")?,
                row.try_get::<String, _>("hash")?,
            ),
            None => (0, GENESIS.to_string()),
        };
        let at_ms = now_ms();
        let mut records = Vec::with_capacity(events.len());
        for event in events {
            seq += 1;
            let mut record = AuditRecord {
                seq,
                at_ms,
                event: event.clone(),
                prev_hash: prev_hash.clone(),
                hash: String::new(),
            };
            record.hash = record.expected_hash();
            prev_hash = record.hash.clone();
            records.push(record);
        }
        // One statement per hundred entries (ten parameters each, far below every engine's
        // limit): a batch is one round trip, not one per entry.
        for chunk in records.chunks(100) {
            let mut sql = String::from(
                "INSERT INTO audit_log (seq, at_ms, node, actor, source, action, target, detail, \
                 prev_hash, hash) VALUES ",
            );
            sql.push_str(&vec!["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"; chunk.len()].join(", "));
            let mut query = sqlx::query(self.sql_built(sql));
            for record in chunk {
                query = query
                    .bind(record.seq)
                    .bind(record.at_ms)
                    .bind(&record.event.node)
                    .bind(&record.event.actor)
                    .bind(&record.event.source)
                    .bind(&record.event.action)
                    .bind(&record.event.target)
                    .bind(&record.event.detail)
                    .bind(&record.prev_hash)
                    .bind(&record.hash);
            }
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(records)
    }

    /// Checks the whole chain: sequence numbers without gaps from 1, each entry's `prev_hash`
    /// the hash of the one before, each hash what its fields give. Returns how many entries
    /// it checked, or the first that is not as written (`Conflict` naming it).
    pub async fn verify_audit(&self) -> Result<u64> {
        let (mut expected_seq, mut prev) = (1i64, GENESIS.to_string());
        loop {
            let page = self.audit_entries(expected_seq - 1, 1000).await?;
            if page.is_empty() {
                return Ok(u64::try_from(expected_seq - 1).unwrap_or(0));
            }
            for entry in page {
                let broken = |why: &str| {
                    Error::Conflict(format!(
                        "audit entry {} is not as it was written: {why}",
                        entry.seq
                    ))
                };
                if entry.seq != expected_seq {
                    return Err(Error::Conflict(format!(
                        "audit entry {expected_seq} is missing (the next is {})",
                        entry.seq
                    )));
                }
                if entry.prev_hash != prev {
                    return Err(broken("it does not chain to the entry before"));
                }
                if entry.hash != entry.expected_hash() {
                    return Err(broken("its fields do not give its hash (edited)"));
                }
                prev = entry.hash;
                expected_seq += 1;
            }
        }
    }

    /// Up to `limit` entries after `after_seq`, in order.
    pub async fn audit_entries(&self, after_seq: i64, limit: u32) -> Result<Vec<AuditRecord>> {
        let rows =
            sqlx::query(self.sql("SELECT * FROM audit_log WHERE seq > ? ORDER BY seq LIMIT ?"))
                .bind(after_seq)
                .bind(i64::from(limit))
                .fetch_all(self.writer_uncached())
                .await
                .map_err(db_err)?;
        rows.iter().map(audit_from_row).collect()
    }
}
