//! Binaries by digest: looked up, and removed by garbage collection when nothing refers to them.

use super::*;

impl Metadata {
    /// A binary by any of its checksums (the oldest, if an MD5 or SHA-1 is shared).
    pub async fn find_binary(&self, lookup: ChecksumLookup) -> Result<Option<BinaryRecord>> {
        let (sql, value) = match lookup {
            ChecksumLookup::Sha256(d) => ("SELECT * FROM binaries WHERE sha256 = ?", d.to_hex()),
            ChecksumLookup::Sha1(d) => (
                "SELECT * FROM binaries WHERE sha1 = ? ORDER BY created_ms LIMIT 1",
                d.to_hex(),
            ),
            ChecksumLookup::Md5(d) => (
                "SELECT * FROM binaries WHERE md5 = ? ORDER BY created_ms LIMIT 1",
                d.to_hex(),
            ),
        };
        sqlx::query(self.sql(sql))
            .bind(value)
            .fetch_optional(&self.reader)
            .await
            .map_err(db_err)?
            .as_ref()
            .map(binary_from_row)
            .transpose()
    }

    /// Binaries that no artifact and no trash entry refers to, oldest first.
    pub async fn unreferenced_binaries(&self, limit: u32) -> Result<Vec<BinaryRecord>> {
        sqlx::query(self.sql(
            "SELECT * FROM binaries b \
             WHERE NOT EXISTS (SELECT 1 FROM artifacts a WHERE a.sha256 = b.sha256) \
             AND NOT EXISTS (SELECT 1 FROM trash t WHERE t.sha256 = b.sha256) \
             ORDER BY created_ms LIMIT ?",
        ))
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await
        .map_err(db_err)?
        .iter()
        .map(binary_from_row)
        .collect()
    }

    /// Binary rows after `after` (by digest), `limit` at a time: a scrub's walk over them.
    pub async fn binaries_after(
        &self,
        after: Option<&Sha256>,
        limit: u32,
    ) -> Result<Vec<BinaryRecord>> {
        sqlx::query(self.sql("SELECT * FROM binaries WHERE sha256 > ? ORDER BY sha256 LIMIT ?"))
            .bind(after.map(Sha256::to_hex).unwrap_or_default())
            .bind(i64::from(limit))
            .fetch_all(&self.reader)
            .await
            .map_err(db_err)?
            .iter()
            .map(binary_from_row)
            .collect()
    }

    /// Deletes a binary's row if nothing refers to it; returns whether it did. The caller
    /// deletes the bytes afterwards, under the binary's lock.
    pub async fn delete_binary_if_unreferenced(&self, sha256: &Sha256) -> Result<bool> {
        let deleted = sqlx::query(self.sql(
            "DELETE FROM binaries WHERE sha256 = ? \
             AND NOT EXISTS (SELECT 1 FROM artifacts a WHERE a.sha256 = binaries.sha256) \
             AND NOT EXISTS (SELECT 1 FROM trash t WHERE t.sha256 = binaries.sha256)",
        ))
        .bind(sha256.to_hex())
        .execute(self.writes().pool())
        .await
        .map_err(db_err)?
        .rows_affected();
        Ok(deleted > 0)
    }

    /// Whether a row records this binary, asked of the primary (never a replica): garbage
    /// collection's check under the binary's lock must see every committed deploy.
    pub async fn binary_recorded(&self, sha256: &Sha256) -> Result<bool> {
        let found = sqlx::query(self.sql("SELECT 1 FROM binaries WHERE sha256 = ?"))
            .bind(sha256.to_hex())
            .fetch_optional(self.fresh_reads())
            .await
            .map_err(db_err)?;
        Ok(found.is_some())
    }

    /// How many collections have begun removing binaries ([`Self::count_gc_run`]), asked of
    /// the primary.
    pub async fn gc_runs(&self) -> Result<i64> {
        sqlx::query(self.sql("SELECT runs FROM gc_state WHERE id = 1"))
            .fetch_one(self.fresh_reads())
            .await
            .map_err(db_err)?
            .try_get("runs")
            .map_err(db_err)
    }

    /// Counts one more collection that begins removing binaries (under its removal lock,
    /// before it removes any).
    pub async fn count_gc_run(&self) -> Result<()> {
        sqlx::query(self.sql("UPDATE gc_state SET runs = runs + 1 WHERE id = 1"))
            .execute(self.writer_uncached())
            .await
            .map_err(db_err)?;
        Ok(())
    }
}
