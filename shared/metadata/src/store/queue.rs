//! The cluster eventual queue's ledger: which node's queue disk holds a copy of a binary that
//! the object store does not have yet (`queue_copies`), and which nodes are alive to hold or
//! serve one. Who uploads a binary is a leased lock (`queue:<sha256>`, [`Metadata::try_lock`]),
//! taken and given up like every other lease, by the database's clock.

use super::*;
use stowage_core::eventual::QueuedCopy;

impl Metadata {
    /// Records that each of `nodes` holds a durable copy of `sha256` in its queue (a copy
    /// recorded twice stays one row).
    pub async fn record_queue_copies(
        &self,
        sha256: &Sha256,
        size: u64,
        nodes: &[&str],
    ) -> Result<()> {
        if nodes.is_empty() {
            return Ok(());
        }
        let size = i64::try_from(size).unwrap_or(i64::MAX);
        // One statement for every holder: one round trip per deploy, whatever the redundancy.
        let rows = vec![format!("(?, ?, ?, {})", self.db_now()); nodes.len()].join(", ");
        let sql = format!(
            "INSERT INTO queue_copies (sha256, node, size, queued_ms) VALUES {rows} \
             ON CONFLICT (sha256, node) DO NOTHING"
        );
        let digest = sha256.to_hex();
        let mut query = sqlx::query(self.sql_built(sql));
        for node in nodes {
            query = query.bind(digest.clone()).bind(*node).bind(size);
        }
        query
            .execute(self.writer_uncached())
            .await
            .map_err(db_err)?;
        Ok(())
    }

    /// Forgets `node`'s copy of `sha256`, or every copy (`None`: the object store has it).
    pub async fn forget_queue_copies(&self, sha256: &Sha256, node: Option<&str>) -> Result<()> {
        let query = match node {
            Some(node) => {
                sqlx::query(self.sql("DELETE FROM queue_copies WHERE sha256 = ? AND node = ?"))
                    .bind(sha256.to_hex())
                    .bind(node.to_string())
            }
            None => sqlx::query(self.sql("DELETE FROM queue_copies WHERE sha256 = ?"))
                .bind(sha256.to_hex()),
        };
        query
            .execute(self.writer_uncached())
            .await
            .map_err(db_err)?;
        Ok(())
    }

    /// Every recorded copy of every queued binary, by binary then node.
    pub async fn queue_copies(&self) -> Result<Vec<QueuedCopy>> {
        let rows =
            sqlx::query(self.sql(
                "SELECT sha256, node, size, queued_ms FROM queue_copies ORDER BY sha256, node",
            ))
            .fetch_all(self.writer_uncached())
            .await
            .map_err(db_err)?;
        rows.iter().map(queue_copy).collect()
    }

    /// The live nodes (heartbeat at most `within` old) recorded as holding a copy of
    /// `sha256`, by id.
    pub async fn queue_holders(
        &self,
        sha256: &Sha256,
        within: Duration,
    ) -> Result<Vec<NodeRecord>> {
        let rows = sqlx::query(self.sql_now(
            "SELECT n.* FROM queue_copies q JOIN nodes n ON n.id = q.node \
             WHERE q.sha256 = ? AND n.heartbeat_ms >= {now} - ? ORDER BY n.id",
        ))
        .bind(sha256.to_hex())
        .bind(i64::try_from(within.as_millis()).unwrap_or(i64::MAX))
        .fetch_all(self.writer_uncached())
        .await
        .map_err(db_err)?;
        rows.iter().map(super::cluster::node_record).collect()
    }

    /// The nodes whose last heartbeat is at most `within` old (by the database's clock), by id.
    pub async fn live_nodes(&self, within: Duration) -> Result<Vec<NodeRecord>> {
        let rows = sqlx::query(
            self.sql_now("SELECT * FROM nodes WHERE heartbeat_ms >= {now} - ? ORDER BY id"),
        )
        .bind(i64::try_from(within.as_millis()).unwrap_or(i64::MAX))
        .fetch_all(self.writer_uncached())
        .await
        .map_err(db_err)?;
        rows.iter().map(super::cluster::node_record).collect()
    }
}

fn queue_copy(r: &AnyRow) -> Result<QueuedCopy> {
    let sha256: String = r.try_get("sha256").map_err(db_err)?;
    let size: i64 = r.try_get("size").map_err(db_err)?;
    Ok(QueuedCopy {
        sha256: sha256.parse().map_err(|_| corrupt("SHA-256", &sha256))?,
        node: r.try_get("node").map_err(db_err)?,
        size: u64::try_from(size).unwrap_or(0),
        queued_ms: r.try_get("queued_ms").map_err(db_err)?,
    })
}
