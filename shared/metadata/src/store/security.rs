//! Users, groups, permission targets and access tokens. Always read from the primary (the
//! writer): an access decision must follow a revocation within seconds, whatever a replica's
//! lag.

use super::*;

fn flag(row: &AnyRow, column: &str) -> Result<bool> {
    Ok(row.try_get::<i64, _>(column).map_err(db_err)? != 0)
}

fn token_from_row(row: &AnyRow) -> Result<TokenRecord> {
    Ok(TokenRecord {
        id: row.try_get("id").map_err(db_err)?,
        user: row.try_get("user_name").map_err(db_err)?,
        scope: row.try_get("scope").map_err(db_err)?,
        description: row.try_get("description").map_err(db_err)?,
        created_ms: row.try_get("created_ms").map_err(db_err)?,
        expires_ms: row.try_get("expires_ms").map_err(db_err)?,
        revoked: flag(row, "revoked")?,
        refreshable: row
            .try_get::<Option<String>, _>("refresh_sha256")
            .map_err(db_err)?
            .is_some(),
    })
}

impl Metadata {
    /// Users (with their groups), groups (with their members) and permission targets, each
    /// by name.
    pub async fn security_snapshot(&self) -> Result<SecuritySnapshot> {
        let db = self.writer_uncached();
        let members =
            sqlx::query(self.sql(
                "SELECT group_name, user_name FROM group_members ORDER BY group_name, user_name",
            ))
            .fetch_all(db)
            .await
            .map_err(db_err)?
            .iter()
            .map(|r| {
                Ok((
                    r.try_get::<String, _>("group_name").map_err(db_err)?,
                    r.try_get::<String, _>("user_name").map_err(db_err)?,
                ))
            })
            .collect::<Result<Vec<(String, String)>>>()?;
        let users = sqlx::query(self.sql("SELECT * FROM users ORDER BY name"))
            .fetch_all(db)
            .await
            .map_err(db_err)?
            .iter()
            .map(|r| {
                let name: String = r.try_get("name").map_err(db_err)?;
                Ok(UserRecord {
                    groups: members
                        .iter()
                        .filter(|(_, u)| *u == name)
                        .map(|(g, _)| g.clone())
                        .collect(),
                    email: r.try_get("email").map_err(db_err)?,
                    password_hash: r.try_get("password_hash").map_err(db_err)?,
                    admin: flag(r, "admin")?,
                    disabled: flag(r, "disabled")?,
                    created_ms: r.try_get("created_ms").map_err(db_err)?,
                    name,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let groups = sqlx::query(self.sql("SELECT * FROM user_groups ORDER BY name"))
            .fetch_all(db)
            .await
            .map_err(db_err)?
            .iter()
            .map(|r| {
                let name: String = r.try_get("name").map_err(db_err)?;
                Ok(GroupRecord {
                    members: members
                        .iter()
                        .filter(|(g, _)| *g == name)
                        .map(|(_, u)| u.clone())
                        .collect(),
                    description: r.try_get("description").map_err(db_err)?,
                    auto_join: flag(r, "auto_join")?,
                    created_ms: r.try_get("created_ms").map_err(db_err)?,
                    name,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let permissions = sqlx::query(self.sql("SELECT * FROM permission_targets ORDER BY name"))
            .fetch_all(db)
            .await
            .map_err(db_err)?
            .iter()
            .map(|r| {
                Ok(PermissionRecord {
                    name: r.try_get("name").map_err(db_err)?,
                    body: r.try_get("body").map_err(db_err)?,
                    created_ms: r.try_get("created_ms").map_err(db_err)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(SecuritySnapshot {
            users,
            groups,
            permissions,
        })
    }

    /// Creates or updates a user; `password_hash: None` keeps the one it has. A new user joins
    /// the groups marked `auto_join` besides `user.groups`; an existing one gets exactly
    /// `user.groups`. Every named group must exist. Returns whether it was created.
    pub async fn put_user(&self, user: &UserRecord) -> Result<bool> {
        let writes = self.writes();
        let mut tx = writes.begin().await?;
        let existed = sqlx::query(self.sql("SELECT 1 FROM users WHERE name = ?"))
            .bind(&user.name)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?
            .is_some();
        if existed {
            sqlx::query(self.sql(
                "UPDATE users SET email = ?, admin = ?, disabled = ?, \
                 password_hash = COALESCE(?, password_hash) WHERE name = ?",
            ))
            .bind(&user.email)
            .bind(i64::from(user.admin))
            .bind(i64::from(user.disabled))
            .bind(user.password_hash.as_deref())
            .bind(&user.name)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
            sqlx::query(self.sql("DELETE FROM group_members WHERE user_name = ?"))
                .bind(&user.name)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        } else {
            sqlx::query(self.sql(
                "INSERT INTO users (name, email, password_hash, admin, disabled, created_ms) \
                 VALUES (?, ?, ?, ?, ?, ?)",
            ))
            .bind(&user.name)
            .bind(&user.email)
            .bind(user.password_hash.as_deref())
            .bind(i64::from(user.admin))
            .bind(i64::from(user.disabled))
            .bind(now_ms())
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        }
        let mut groups = user.groups.clone();
        if !existed {
            let auto: Vec<String> =
                sqlx::query_scalar(self.sql("SELECT name FROM user_groups WHERE auto_join <> 0"))
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(db_err)?;
            groups.extend(auto);
        }
        groups.sort();
        groups.dedup();
        for group in &groups {
            let known = sqlx::query(self.sql("SELECT 1 FROM user_groups WHERE name = ?"))
                .bind(group)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?
                .is_some();
            if !known {
                return Err(Error::InvalidInput(format!("there is no group {group:?}")));
            }
            sqlx::query(
                self.sql("INSERT INTO group_members (group_name, user_name) VALUES (?, ?)"),
            )
            .bind(group)
            .bind(&user.name)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        }
        tx.commit().await.map_err(db_err)?;
        Ok(!existed)
    }

    /// Removes a user, its memberships and its tokens; returns whether it existed.
    pub async fn delete_user(&self, name: &str) -> Result<bool> {
        let writes = self.writes();
        let mut tx = writes.begin().await?;
        for sql in [
            "DELETE FROM group_members WHERE user_name = ?",
            "DELETE FROM access_tokens WHERE user_name = ?",
        ] {
            sqlx::query(self.sql(sql))
                .bind(name)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        }
        let done = sqlx::query(self.sql("DELETE FROM users WHERE name = ?"))
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(done.rows_affected() > 0)
    }

    /// Creates or updates a group; `members: Some` replaces its members (every one must be a
    /// user). Returns whether it was created.
    pub async fn put_group(&self, group: &GroupRecord, members: Option<&[String]>) -> Result<bool> {
        let writes = self.writes();
        let mut tx = writes.begin().await?;
        let updated = sqlx::query(
            self.sql("UPDATE user_groups SET description = ?, auto_join = ? WHERE name = ?"),
        )
        .bind(&group.description)
        .bind(i64::from(group.auto_join))
        .bind(&group.name)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?
        .rows_affected()
            > 0;
        if !updated {
            sqlx::query(self.sql(
                "INSERT INTO user_groups (name, description, auto_join, created_ms) \
                 VALUES (?, ?, ?, ?)",
            ))
            .bind(&group.name)
            .bind(&group.description)
            .bind(i64::from(group.auto_join))
            .bind(now_ms())
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        }
        if let Some(members) = members {
            sqlx::query(self.sql("DELETE FROM group_members WHERE group_name = ?"))
                .bind(&group.name)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
            let mut members = members.to_vec();
            members.sort();
            members.dedup();
            for user in &members {
                let known = sqlx::query(self.sql("SELECT 1 FROM users WHERE name = ?"))
                    .bind(user)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db_err)?
                    .is_some();
                if !known {
                    return Err(Error::InvalidInput(format!("there is no user {user:?}")));
                }
                sqlx::query(
                    self.sql("INSERT INTO group_members (group_name, user_name) VALUES (?, ?)"),
                )
                .bind(&group.name)
                .bind(user)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
            }
        }
        tx.commit().await.map_err(db_err)?;
        Ok(!updated)
    }

    /// Removes a group and its memberships; returns whether it existed.
    pub async fn delete_group(&self, name: &str) -> Result<bool> {
        let writes = self.writes();
        let mut tx = writes.begin().await?;
        sqlx::query(self.sql("DELETE FROM group_members WHERE group_name = ?"))
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        let done = sqlx::query(self.sql("DELETE FROM user_groups WHERE name = ?"))
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(done.rows_affected() > 0)
    }

    /// Creates or replaces a permission target; returns whether it was created.
    pub async fn put_permission(&self, name: &str, body: &str) -> Result<bool> {
        let db = self.writer_uncached();
        let updated =
            sqlx::query(self.sql("UPDATE permission_targets SET body = ? WHERE name = ?"))
                .bind(body)
                .bind(name)
                .execute(db)
                .await
                .map_err(db_err)?
                .rows_affected()
                > 0;
        if updated {
            return Ok(false);
        }
        sqlx::query(
            self.sql("INSERT INTO permission_targets (name, body, created_ms) VALUES (?, ?, ?)"),
        )
        .bind(name)
        .bind(body)
        .bind(now_ms())
        .execute(db)
        .await
        .map_err(db_err)?;
        Ok(true)
    }

    /// Removes a permission target; returns whether it existed.
    pub async fn delete_permission(&self, name: &str) -> Result<bool> {
        let done = sqlx::query(self.sql("DELETE FROM permission_targets WHERE name = ?"))
            .bind(name)
            .execute(self.writer_uncached())
            .await
            .map_err(db_err)?;
        Ok(done.rows_affected() > 0)
    }

    /// Records an access token whose secret hashes to `token_sha256` (hex), and whose refresh
    /// token, if it has one, hashes to `refresh_sha256`.
    pub async fn create_access_token(
        &self,
        token: &TokenRecord,
        token_sha256: &str,
        refresh_sha256: Option<&str>,
    ) -> Result<()> {
        self.insert_access_token(self.writer_uncached(), token, token_sha256, refresh_sha256)
            .await
    }

    async fn insert_access_token<'e, E>(
        &self,
        db: E,
        token: &TokenRecord,
        token_sha256: &str,
        refresh_sha256: Option<&str>,
    ) -> Result<()>
    where
        E: sqlx::Executor<'e, Database = Any>,
    {
        sqlx::query(self.sql(
            "INSERT INTO access_tokens (id, user_name, token_sha256, scope, description, \
             created_ms, expires_ms, revoked, refresh_sha256) VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?)",
        ))
        .bind(&token.id)
        .bind(&token.user)
        .bind(token_sha256)
        .bind(&token.scope)
        .bind(&token.description)
        .bind(token.created_ms)
        .bind(token.expires_ms)
        .bind(refresh_sha256)
        .execute(db)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    /// The live token a refresh token (by its SHA-256, hex) may replace.
    pub async fn access_token_by_refresh(
        &self,
        refresh_sha256: &str,
    ) -> Result<Option<TokenRecord>> {
        sqlx::query(
            self.sql("SELECT * FROM access_tokens WHERE refresh_sha256 = ? AND revoked = 0"),
        )
        .bind(refresh_sha256)
        .fetch_optional(self.writer_uncached())
        .await
        .map_err(db_err)?
        .as_ref()
        .map(token_from_row)
        .transpose()
    }

    /// Replaces the token `old_id` by `new` in one transaction: `false` (and nothing changes)
    /// when `old_id` was revoked or replaced meanwhile, so a refresh token works once.
    pub async fn replace_access_token(
        &self,
        old_id: &str,
        new: &TokenRecord,
        token_sha256: &str,
        refresh_sha256: Option<&str>,
    ) -> Result<bool> {
        let writes = self.writes();
        let mut tx = writes.begin().await?;
        let revoked = sqlx::query(self.sql(
            "UPDATE access_tokens SET revoked = 1, refresh_sha256 = NULL \
             WHERE id = ? AND revoked = 0",
        ))
        .bind(old_id)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?
        .rows_affected();
        if revoked == 0 {
            return Ok(false);
        }
        self.insert_access_token(&mut *tx, new, token_sha256, refresh_sha256)
            .await?;
        tx.commit().await.map_err(db_err)?;
        Ok(true)
    }

    /// The token whose secret hashes to `token_sha256` (hex), revoked or expired included.
    pub async fn access_token_by_hash(&self, token_sha256: &str) -> Result<Option<TokenRecord>> {
        sqlx::query(self.sql("SELECT * FROM access_tokens WHERE token_sha256 = ?"))
            .bind(token_sha256)
            .fetch_optional(self.writer_uncached())
            .await
            .map_err(db_err)?
            .as_ref()
            .map(token_from_row)
            .transpose()
    }

    /// Tokens, newest first: all of them, or those of `user`.
    pub async fn access_tokens(&self, user: Option<&str>) -> Result<Vec<TokenRecord>> {
        let rows = match user {
            Some(user) => {
                sqlx::query(self.sql(
                    "SELECT * FROM access_tokens WHERE user_name = ? ORDER BY created_ms DESC, id",
                ))
                .bind(user)
                .fetch_all(self.writer_uncached())
                .await
            }
            None => {
                sqlx::query(self.sql("SELECT * FROM access_tokens ORDER BY created_ms DESC, id"))
                    .fetch_all(self.writer_uncached())
                    .await
            }
        }
        .map_err(db_err)?;
        rows.iter().map(token_from_row).collect()
    }

    /// Revokes a token; returns whether a token by that id was live until now.
    pub async fn revoke_access_token(&self, id: &str) -> Result<bool> {
        let done = sqlx::query(
            self.sql("UPDATE access_tokens SET revoked = 1 WHERE id = ? AND revoked = 0"),
        )
        .bind(id)
        .execute(self.writer_uncached())
        .await
        .map_err(db_err)?;
        Ok(done.rows_affected() > 0)
    }
}
