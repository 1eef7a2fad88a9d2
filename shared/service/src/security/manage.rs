//! Managing users, groups, permission targets and tokens: the operations behind Artifactory's
//! security REST calls and `stowage user` / `stowage token`, each authorized here. Users,
//! groups and permission targets are the administrator's; a user creates, lists and revokes
//! its own tokens.

use std::time::Duration;

use stowage_core::{Error, Result};
use stowage_metadata::{GroupRecord, PermissionRecord, TokenRecord, UserRecord};

use super::{Caller, NewToken, Scope, Security, Target, TargetJson, hash_password};

/// Names no user may take: the unauthenticated caller's, and the admin token's (so that the
/// audit trail's `admin` is always the administrator).
const RESERVED: [&str; 2] = [super::ANONYMOUS, crate::auth::ADMIN];

/// A user as given to create or change it; `None` fields are left as they are (a new user
/// gets the defaults: no email, no password, not admin, enabled, no groups but the auto-join
/// ones).
#[derive(Debug, Clone, Default)]
pub struct UserChange {
    pub email: Option<String>,
    /// The new password, in clear (hashed here, never kept).
    pub password: Option<String>,
    pub admin: Option<bool>,
    pub disabled: Option<bool>,
    pub groups: Option<Vec<String>>,
}

/// A group as given to create or change it.
#[derive(Debug, Clone, Default)]
pub struct GroupChange {
    pub description: Option<String>,
    pub auto_join: Option<bool>,
    pub members: Option<Vec<String>>,
}

/// A token asked for.
#[derive(Debug, Clone, Default)]
pub struct TokenRequest {
    /// Whose token (default: the caller's own).
    pub user: Option<String>,
    /// `applied-permissions/…` (default: the user's).
    pub scope: Option<String>,
    /// Lifetime (default: `[security] token_default_expiry_secs`; zero: never expires, where
    /// allowed).
    pub expires_in: Option<Duration>,
    pub description: String,
    /// Whether a refresh token comes with it.
    pub refreshable: bool,
}

/// A stored permission target's JSON, as answered.
fn target_json(record: &PermissionRecord) -> Result<TargetJson> {
    let json: TargetJson = serde_json::from_str(&record.body)
        .map_err(|e| Error::InvalidInput(format!("permission target {}: {e}", record.name)))?;
    Ok(Target::normalized(
        &json,
        &Target::parse(&record.name, &json)?,
    ))
}

fn check_name(what: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'));
    if !ok {
        return Err(Error::InvalidInput(format!(
            "a {what} name has 1 to 64 letters, digits, '-', '_', '.' or '@': {name:?} is not one"
        )));
    }
    Ok(())
}

impl Security {
    /// Every user (admin only).
    pub async fn users(&self, caller: &Caller) -> Result<Vec<UserRecord>> {
        self.require_admin(caller, "list users")?;
        Ok(self.snapshot().await?.users)
    }

    /// One user (admin, or the user itself); `NotFound` otherwise.
    pub async fn user(&self, caller: &Caller, name: &str) -> Result<UserRecord> {
        if !caller.is_admin() && caller.name != name {
            return Err(caller.refused(&format!("read user {name}")));
        }
        self.snapshot()
            .await?
            .users
            .into_iter()
            .find(|u| u.name == name)
            .ok_or_else(|| Error::NotFound {
                what: format!("user {name}"),
            })
    }

    /// Creates (`create`: it must not exist) or changes a user. Returns whether it was created.
    pub async fn put_user(
        &self,
        caller: &Caller,
        name: &str,
        change: UserChange,
        create: bool,
    ) -> Result<bool> {
        self.require_admin(caller, &format!("create or change user {name}"))?;
        check_name("user", name)?;
        if RESERVED.contains(&name) {
            return Err(Error::InvalidInput(format!("{name:?} is reserved")));
        }
        let current = self
            .snapshot()
            .await?
            .users
            .into_iter()
            .find(|u| u.name == name);
        if create && current.is_some() {
            return Err(Error::Conflict(format!("user {name} exists already")));
        }
        if !create && current.is_none() {
            return Err(Error::NotFound {
                what: format!("user {name}"),
            });
        }
        let base = current.unwrap_or_else(|| UserRecord {
            name: name.to_string(),
            email: String::new(),
            password_hash: None,
            admin: false,
            disabled: false,
            created_ms: 0,
            groups: Vec::new(),
        });
        let password_hash = change.password.as_deref().map(hash_password).transpose()?;
        let user = UserRecord {
            email: change.email.unwrap_or(base.email),
            // None keeps the stored hash.
            password_hash,
            admin: change.admin.unwrap_or(base.admin),
            disabled: change.disabled.unwrap_or(base.disabled),
            groups: change.groups.unwrap_or(base.groups),
            ..base
        };
        let created = self.metadata.put_user(&user).await?;
        self.changed();
        let detail = format!(
            "admin={} disabled={} groups={}{}",
            user.admin,
            user.disabled,
            user.groups.join(","),
            if user.password_hash.is_some() {
                " password changed"
            } else {
                ""
            }
        );
        self.audit(caller, "user.put", name, &detail).await;
        Ok(created)
    }

    /// Removes a user and its tokens.
    pub async fn delete_user(&self, caller: &Caller, name: &str) -> Result<()> {
        self.require_admin(caller, &format!("delete user {name}"))?;
        let deleted = self.metadata.delete_user(name).await?;
        self.changed();
        if deleted {
            self.audit(caller, "user.delete", name, "").await;
        }
        deleted.then_some(()).ok_or_else(|| Error::NotFound {
            what: format!("user {name}"),
        })
    }

    /// Every group (admin only).
    pub async fn groups(&self, caller: &Caller) -> Result<Vec<GroupRecord>> {
        self.require_admin(caller, "list groups")?;
        Ok(self.snapshot().await?.groups)
    }

    /// Creates or changes a group; returns whether it was created.
    pub async fn put_group(
        &self,
        caller: &Caller,
        name: &str,
        change: GroupChange,
    ) -> Result<bool> {
        self.require_admin(caller, &format!("create or change group {name}"))?;
        check_name("group", name)?;
        let current = self
            .snapshot()
            .await?
            .groups
            .into_iter()
            .find(|g| g.name == name);
        let group = GroupRecord {
            name: name.to_string(),
            description: change
                .description
                .or_else(|| current.as_ref().map(|g| g.description.clone()))
                .unwrap_or_default(),
            auto_join: change
                .auto_join
                .or_else(|| current.as_ref().map(|g| g.auto_join))
                .unwrap_or(false),
            created_ms: 0,
            members: Vec::new(),
        };
        let created = self
            .metadata
            .put_group(&group, change.members.as_deref())
            .await?;
        self.changed();
        let members = change.members.map(|m| m.join(",")).unwrap_or_default();
        self.audit(caller, "group.put", name, &format!("members={members}"))
            .await;
        Ok(created)
    }

    /// Removes a group.
    pub async fn delete_group(&self, caller: &Caller, name: &str) -> Result<()> {
        self.require_admin(caller, &format!("delete group {name}"))?;
        let deleted = self.metadata.delete_group(name).await?;
        self.changed();
        if deleted {
            self.audit(caller, "group.delete", name, "").await;
        }
        deleted.then_some(()).ok_or_else(|| Error::NotFound {
            what: format!("group {name}"),
        })
    }

    /// Whether `caller` may manage the permission target `json`: an administrator always; a
    /// user when it has `manage` in every repository the target names by name (a target on
    /// `ANY`, or on a pattern, is the administrators').
    async fn may_manage(&self, caller: &Caller, json: &TargetJson) -> Result<bool> {
        if caller.is_admin() {
            return Ok(true);
        }
        let repos = json
            .repo
            .as_ref()
            .map(|r| r.repositories.clone())
            .unwrap_or_default();
        let named = |r: &String| !r.starts_with("ANY") && !r.contains(['*', '?', '[', '{']);
        if repos.is_empty() || !repos.iter().all(named) {
            return Ok(false);
        }
        for repo in &repos {
            if !self
                .may_in_repository(caller, super::Action::Manage, repo)
                .await?
            {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The stored permission target `name`, if there is one.
    async fn stored_permission(&self, name: &str) -> Result<Option<TargetJson>> {
        let snapshot = self.snapshot().await?;
        snapshot
            .permissions
            .iter()
            .find(|p| p.name == name)
            .map(target_json)
            .transpose()
    }

    /// The permission targets `caller` may manage, as their JSON: every one for an
    /// administrator.
    pub async fn permissions(&self, caller: &Caller) -> Result<Vec<TargetJson>> {
        if caller.is_anonymous() {
            return Err(caller.refused("list permission targets"));
        }
        let mut shown = Vec::new();
        for record in &self.snapshot().await?.permissions {
            let json = target_json(record)?;
            if self.may_manage(caller, &json).await? {
                shown.push(json);
            }
        }
        Ok(shown)
    }

    /// Creates or replaces a permission target (checked first); returns whether it was
    /// created.
    pub async fn put_permission(
        &self,
        caller: &Caller,
        name: &str,
        json: TargetJson,
    ) -> Result<bool> {
        // A user with `manage` in the repositories may change their targets, never widen one
        // beyond them.
        let current = self.stored_permission(name).await?;
        let allowed = self.may_manage(caller, &json).await?
            && match &current {
                Some(current) => self.may_manage(caller, current).await?,
                None => true,
            };
        if !allowed {
            return Err(caller.refused(&format!("create or change permission target {name}")));
        }
        check_name("permission target", name)?;
        let target = Target::parse(name, &json)?;
        let body = serde_json::to_string(&Target::normalized(&json, &target))
            .map_err(|e| Error::InvalidInput(format!("permission target {name}: {e}")))?;
        let created = self.metadata.put_permission(name, &body).await?;
        self.changed();
        self.audit(caller, "permission.put", name, &body).await;
        Ok(created)
    }

    /// Removes a permission target.
    pub async fn delete_permission(&self, caller: &Caller, name: &str) -> Result<()> {
        let allowed = match self.stored_permission(name).await? {
            Some(current) => self.may_manage(caller, &current).await?,
            None => caller.is_admin(),
        };
        if !allowed {
            return Err(caller.refused(&format!("delete permission target {name}")));
        }
        let deleted = self.metadata.delete_permission(name).await?;
        self.changed();
        if deleted {
            self.audit(caller, "permission.delete", name, "").await;
        }
        deleted.then_some(()).ok_or_else(|| Error::NotFound {
            what: format!("permission target {name}"),
        })
    }

    /// Creates a token: an administrator for any user, a user for itself (never with more
    /// than its own rights).
    pub async fn issue_token(&self, caller: &Caller, request: TokenRequest) -> Result<NewToken> {
        if caller.is_anonymous() {
            return Err(caller.refused("create a token"));
        }
        let user = request.user.unwrap_or_else(|| caller.name.clone());
        if user != caller.name && !caller.is_admin() {
            return Err(caller.refused(&format!("create a token for {user}")));
        }
        let record = self
            .snapshot()
            .await?
            .users
            .into_iter()
            .find(|u| u.name == user)
            .ok_or_else(|| Error::NotFound {
                what: format!("user {user} (create it first)"),
            })?;
        let scope = Scope::parse(request.scope.as_deref().unwrap_or(""))?;
        let token = self
            .create_token(
                &record,
                scope,
                request.expires_in,
                &request.description,
                request.refreshable,
            )
            .await?;
        let detail = format!(
            "user={} scope={} expires_ms={}",
            token.record.user,
            token.record.scope,
            token
                .record
                .expires_ms
                .map_or_else(|| "never".to_string(), |e| e.to_string())
        );
        self.audit(caller, "token.create", &token.record.id, &detail)
            .await;
        Ok(token)
    }

    /// Tokens: every one for an administrator, its own for a user.
    pub async fn tokens(&self, caller: &Caller) -> Result<Vec<TokenRecord>> {
        if caller.is_anonymous() {
            return Err(caller.refused("list tokens"));
        }
        let user = (!caller.is_admin()).then_some(caller.name.as_str());
        self.metadata.access_tokens(user).await
    }

    /// Revokes a token: any for an administrator, its own for a user.
    pub async fn revoke(&self, caller: &Caller, id: &str) -> Result<()> {
        if !caller.is_admin() {
            let own = self.tokens(caller).await?.iter().any(|t| t.id == id);
            if !own {
                return Err(Error::NotFound {
                    what: format!("a live token with id {id}"),
                });
            }
        }
        self.revoke_token(id).await?;
        self.audit(caller, "token.revoke", id, "").await;
        Ok(())
    }
}
