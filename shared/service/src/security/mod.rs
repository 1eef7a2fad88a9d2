//! Who a caller is, and what it may do: users (argon2id password hashes), groups, permission
//! targets and scoped access tokens, as in Artifactory's security model; plus the admin token
//! of the first start ([`crate::auth`]). The service asks [`Security`] before every operation
//! (the one door), so HTTP, the functions and the CLI decide alike.
//!
//! What it reads is cached for at most [`FRESHNESS`] on each node: a revoked token, a disabled
//! user or a changed permission takes effect everywhere within that bound (it is read from the
//! primary database, never a replica). Secrets are stored hashed and compared in constant time
//! or by their hash; no answer and no log line carries one.

pub mod manage;
pub mod permissions;

use std::sync::Arc;
use std::time::Duration;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine;
use sha2::{Digest, Sha256};
use stowage_core::{Error, RepoKey, Result};
use stowage_metadata::{
    AuditEvent, AuditRecord, Metadata, SecuritySnapshot, TokenRecord, UserRecord, now_ms,
};

pub use manage::{GroupChange, TokenRequest, UserChange};
pub use permissions::{Action, Actions, Grantees, Target, TargetJson, Targets};

use crate::auth::{ADMIN, Auth};

/// How long a node may act on what it read of users, groups, permissions and tokens.
pub const FRESHNESS: Duration = Duration::from_secs(2);
/// The name an unauthenticated caller has (grant it permissions to open repositories).
pub const ANONYMOUS: &str = "anonymous";
/// What access tokens start with (so a basic-auth secret is known as one).
const TOKEN_PREFIX: &str = "stwt_";
/// Failed logins per user, or per source address, within [`THROTTLE_WINDOW`] before further
/// attempts are refused without being checked.
const THROTTLE_LIMIT: u64 = 10;
const THROTTLE_WINDOW: Duration = Duration::from_secs(60);

/// What a token may do, of its user's rights.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Everything the user may do (`applied-permissions/user`).
    User,
    /// Administration (`applied-permissions/admin`; for admin users only).
    Admin,
    /// Only what these groups of the user are granted (`applied-permissions/groups:a,b`).
    Groups(Vec<String>),
}

impl Scope {
    /// A scope as Artifactory writes it; `InvalidInput` otherwise.
    pub fn parse(text: &str) -> Result<Scope> {
        let text = text.trim();
        match text {
            "" | "applied-permissions/user" => return Ok(Scope::User),
            "applied-permissions/admin" => return Ok(Scope::Admin),
            _ => {}
        }
        if let Some(groups) = text.strip_prefix("applied-permissions/groups:") {
            let groups: Vec<String> = groups
                .split(',')
                .map(|g| g.trim().trim_matches('"').to_string())
                .filter(|g| !g.is_empty())
                .collect();
            if !groups.is_empty() {
                return Ok(Scope::Groups(groups));
            }
        }
        Err(Error::InvalidInput(format!(
            "scope {text:?} is not one of applied-permissions/user, applied-permissions/admin \
             or applied-permissions/groups:<group>[,<group>…]"
        )))
    }

    pub fn text(&self) -> String {
        match self {
            Scope::User => "applied-permissions/user".into(),
            Scope::Admin => "applied-permissions/admin".into(),
            Scope::Groups(groups) => format!("applied-permissions/groups:{}", groups.join(",")),
        }
    }
}

/// Who an operation acts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Recorded as `createdBy`/`modifiedBy` and in the audit trail.
    pub name: String,
    admin: bool,
    /// Whether the user's own grants count (not for a token scoped to groups).
    direct: bool,
    /// The groups whose grants count.
    groups: Vec<String>,
    anonymous: bool,
    /// Where the call came from (the client's address; `local` for the CLI and tasks; `-`
    /// when unknown), for the audit trail.
    pub source: String,
}

impl Caller {
    /// The administrator: the CLI, scheduled tasks, the admin token.
    pub fn admin() -> Caller {
        Caller {
            name: ADMIN.into(),
            admin: true,
            direct: true,
            groups: Vec::new(),
            anonymous: false,
            source: "local".into(),
        }
    }

    /// A caller that sent no credentials.
    pub fn anonymous() -> Caller {
        Caller {
            name: ANONYMOUS.into(),
            admin: false,
            direct: true,
            groups: Vec::new(),
            anonymous: true,
            source: "-".into(),
        }
    }

    /// The same caller, calling from `source`.
    pub fn from_source(mut self, source: &str) -> Caller {
        self.source = source.to_string();
        self
    }

    pub fn is_admin(&self) -> bool {
        self.admin
    }

    pub fn is_anonymous(&self) -> bool {
        self.anonymous
    }

    fn grantees(&self) -> Grantees<'_> {
        Grantees {
            user: self.direct.then_some(self.name.as_str()),
            groups: &self.groups,
        }
    }

    /// The refusal for this caller: 401 (credentials may help) for anonymous, 403 otherwise.
    pub fn refused(&self, what: &str) -> Error {
        if self.anonymous {
            Error::Unauthorized(format!(
                "{what} needs credentials: send Authorization: Bearer <token>, basic \
                 <user>:<password or token>, or X-JFrog-Art-Api: <token>"
            ))
        } else {
            Error::Forbidden(format!("{} may not {what}", self.name))
        }
    }
}

/// Credentials as a request carries them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    None,
    /// `Authorization: Bearer <token>`, or `X-JFrog-Art-Api: <token>`.
    Token(String),
    /// `Authorization: Basic`: a user and a password or a token.
    Basic {
        user: String,
        secret: String,
    },
}

impl Credentials {
    /// From the `Authorization` and `X-JFrog-Art-Api` header values.
    pub fn from_headers(authorization: Option<&str>, api_key: Option<&str>) -> Result<Self> {
        let malformed = || Error::Unauthorized("malformed credentials".into());
        if let Some(value) = authorization {
            let (scheme, rest) = value.split_once(' ').ok_or_else(malformed)?;
            if scheme.eq_ignore_ascii_case("Bearer") {
                return Ok(Credentials::Token(rest.trim().to_string()));
            }
            if scheme.eq_ignore_ascii_case("Basic") {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(rest.trim())
                    .map_err(|_| malformed())?;
                let decoded = String::from_utf8(decoded).map_err(|_| malformed())?;
                let (user, secret) = decoded.split_once(':').ok_or_else(malformed)?;
                return Ok(Credentials::Basic {
                    user: user.to_string(),
                    secret: secret.to_string(),
                });
            }
            return Err(Error::Unauthorized(
                "unsupported Authorization scheme: use Bearer <token> or Basic".into(),
            ));
        }
        Ok(match api_key {
            Some(key) => Credentials::Token(key.trim().to_string()),
            None => Credentials::None,
        })
    }
}

/// Token lifetimes (`[security]`).
#[derive(Debug, Clone)]
pub struct TokenSettings {
    /// Given to a token created without `expires_in` (one year).
    pub default_expiry: Duration,
    /// The longest a token may live; `None`: no limit, and tokens that never expire allowed.
    pub max_expiry: Option<Duration>,
}

impl Default for TokenSettings {
    fn default() -> Self {
        Self {
            default_expiry: Duration::from_secs(365 * 24 * 3600),
            max_expiry: None,
        }
    }
}

/// A token just created: its secret is shown this once.
#[derive(Debug, Clone)]
pub struct NewToken {
    pub record: TokenRecord,
    pub secret: String,
    /// What can replace it once, for a refreshable token (also shown this once).
    pub refresh: Option<String>,
}

/// What decisions are made from, compiled.
#[derive(Debug, Default)]
struct View {
    snapshot: SecuritySnapshot,
    targets: Targets,
}

/// Authentication and authorization for one node.
pub struct Security {
    metadata: Metadata,
    /// This node, for the audit trail.
    node: String,
    /// The first start's admin token, once the entry point has loaded it.
    admin_token: std::sync::OnceLock<Auth>,
    anonymous_read: bool,
    tokens_settings: TokenSettings,
    view: moka::future::Cache<(), Arc<View>>,
    /// Tokens by the SHA-256 of their secret (`None`: no such token).
    tokens: moka::future::Cache<[u8; 32], Option<TokenRecord>>,
    /// Password checks that passed, by the SHA-256 of user, password and stored hash (so a
    /// changed password or hash is a new key): argon2 runs once per freshness period.
    passwords: moka::sync::Cache<[u8; 32], ()>,
    /// Failed logins, by user and by source address.
    failures: moka::sync::Cache<String, u64>,
    /// The background audit writer, once a server turned it on.
    audit_queue: std::sync::OnceLock<tokio::sync::mpsc::Sender<Queued>>,
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Security").finish_non_exhaustive()
    }
}

fn sha256(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

/// The argon2id PHC string of `password`.
pub fn hash_password(password: &str) -> Result<String> {
    if password.chars().count() < 8 {
        return Err(Error::InvalidInput(
            "a password needs at least 8 characters".into(),
        ));
    }
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>())
        .map_err(|e| Error::InvalidInput(format!("cannot salt the password: {e}")))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::InvalidInput(format!("cannot hash the password: {e}")))
}

impl Security {
    /// Decisions over `metadata`; `anonymous_read` grants every anonymous caller read access.
    pub fn new(
        metadata: Metadata,
        node: &str,
        anonymous_read: bool,
        tokens_settings: TokenSettings,
    ) -> Self {
        Self {
            metadata,
            node: node.to_string(),
            admin_token: std::sync::OnceLock::new(),
            anonymous_read,
            tokens_settings,
            view: moka::future::Cache::builder()
                .time_to_live(FRESHNESS)
                .max_capacity(1)
                .build(),
            tokens: moka::future::Cache::builder()
                .time_to_live(FRESHNESS)
                .max_capacity(100_000)
                .build(),
            passwords: moka::sync::Cache::builder()
                .time_to_live(FRESHNESS)
                .max_capacity(100_000)
                .build(),
            failures: moka::sync::Cache::builder()
                .time_to_live(THROTTLE_WINDOW)
                .max_capacity(100_000)
                .build(),
            audit_queue: std::sync::OnceLock::new(),
        }
    }

    /// Accepts the first start's admin token (as `Bearer`, or basic `admin:<token>`).
    pub fn admit_admin_token(&self, auth: Auth) {
        let _ = self.admin_token.set(auth);
    }

    fn is_admin_token(&self, secret: &str) -> bool {
        self.admin_token
            .get()
            .is_some_and(|a| a.is_admin_token(secret))
    }

    /// Whether reads need no credentials at all (`anonymous_read`).
    pub fn anonymous_read(&self) -> bool {
        self.anonymous_read
    }

    async fn view(&self) -> Result<Arc<View>> {
        let metadata = self.metadata.clone();
        self.view
            .try_get_with((), async move {
                let snapshot = metadata.security_snapshot().await?;
                let mut targets = Vec::new();
                for record in &snapshot.permissions {
                    let json: TargetJson =
                        serde_json::from_str(&record.body).map_err(|_| Error::Metadata {
                            source: format!(
                                "permission target {:?} is not valid JSON",
                                record.name
                            )
                            .into(),
                            retryable: false,
                        })?;
                    targets.push(Target::parse(&record.name, &json)?);
                }
                Ok::<_, Error>(Arc::new(View {
                    snapshot,
                    targets: Targets { targets },
                }))
            })
            .await
            .map_err(unshared)
    }

    /// Drops what this node keeps, after a change made here (other nodes follow within
    /// [`FRESHNESS`]).
    pub fn changed(&self) {
        self.view.invalidate_all();
        self.tokens.invalidate_all();
        self.passwords.invalidate_all();
    }

    /// Who `credentials` prove the caller is. `source` is the caller's address, for the
    /// throttle. Every failure says the same, whether the user exists or not.
    pub async fn authenticate(&self, credentials: &Credentials, source: &str) -> Result<Caller> {
        self.identify(credentials, source)
            .await
            .map(|caller| caller.from_source(source))
    }

    async fn identify(&self, credentials: &Credentials, source: &str) -> Result<Caller> {
        let denied = || Error::Unauthorized("bad credentials".into());
        match credentials {
            Credentials::None => Ok(Caller::anonymous()),
            Credentials::Token(secret) if self.is_admin_token(secret) => Ok(Caller::admin()),
            Credentials::Token(secret) => {
                self.throttled(None, source)?;
                match self.by_token(secret, None).await? {
                    Some(caller) => Ok(caller),
                    None => {
                        self.failed(None, source);
                        Err(denied())
                    }
                }
            }
            Credentials::Basic { user, secret } => {
                if user == ADMIN && self.is_admin_token(secret) {
                    return Ok(Caller::admin());
                }
                self.throttled(Some(user), source)?;
                let caller = if secret.starts_with(TOKEN_PREFIX) {
                    self.by_token(secret, Some(user)).await?
                } else {
                    self.by_password(user, secret).await?
                };
                caller.ok_or_else(|| {
                    self.failed(Some(user), source);
                    denied()
                })
            }
        }
    }

    /// The failure counters a login from `source` (`-`: unknown, which shares no counter)
    /// for `user` counts against.
    fn throttle_keys(user: Option<&str>, source: &str) -> Vec<String> {
        let mut keys: Vec<String> = user.map(|u| format!("user:{u}")).into_iter().collect();
        if source != "-" {
            keys.push(format!("addr:{source}"));
        }
        keys
    }

    fn throttled(&self, user: Option<&str>, source: &str) -> Result<()> {
        let over = |key: &String| self.failures.get(key).is_some_and(|n| n >= THROTTLE_LIMIT);
        if Self::throttle_keys(user, source).iter().any(over) {
            return Err(Error::Unauthorized(format!(
                "too many failed logins; wait {} s and try again",
                THROTTLE_WINDOW.as_secs()
            )));
        }
        Ok(())
    }

    fn failed(&self, user: Option<&str>, source: &str) {
        for key in Self::throttle_keys(user, source) {
            let n = self.failures.get(&key).unwrap_or(0);
            self.failures.insert(key, n + 1);
        }
        tracing::warn!(user = user.unwrap_or("-"), %source, "failed login");
        let event = self.event(
            &Caller::anonymous().from_source(source),
            "login.failed",
            user.unwrap_or("-"),
            "",
        );
        self.enqueue(event);
    }

    fn event(&self, caller: &Caller, action: &str, target: &str, detail: &str) -> AuditEvent {
        AuditEvent {
            node: self.node.clone(),
            actor: caller.name.clone(),
            source: caller.source.clone(),
            action: action.to_string(),
            target: target.to_string(),
            detail: detail.to_string(),
        }
    }

    /// Appends to the audit trail what `caller` did (`action` on `target`; `detail` never
    /// holds a secret). The change it records is made already: a trail that cannot be written
    /// is logged as an error, and the change stands.
    pub async fn audit(&self, caller: &Caller, action: &str, target: &str, detail: &str) {
        let event = self.event(caller, action, target, detail);
        match self.audit_queue.get() {
            Some(queue) => {
                // A full queue makes the change wait for the trail, never drops an entry.
                if queue.send(Queued::Event(event)).await.is_err() {
                    tracing::error!("the audit trail's writer has stopped");
                }
            }
            None => record_events(&self.metadata, &[event]).await,
        }
    }

    /// Appends an entry without waiting for it (a failed login), in the background.
    fn enqueue(&self, event: AuditEvent) {
        match self.audit_queue.get() {
            Some(queue) => {
                if let Err(e) = queue.try_send(Queued::Event(event)) {
                    let queue = queue.clone();
                    tokio::spawn(async move {
                        let _ = queue.send(e.into_inner()).await;
                    });
                }
            }
            None => {
                let metadata = self.metadata.clone();
                tokio::spawn(async move { record_events(&metadata, &[event]).await });
            }
        }
    }

    /// From now on, entries are appended in the background, many per transaction (a server:
    /// an entry's own commit per deploy would cost a third of the small-deploy rate on
    /// SQLite). [`Self::flush_audit`] waits for what is queued; a crash loses at most the
    /// entries of the changes that were being acknowledged then. Entry points that end right
    /// after their call (the functions, the CLI) keep appending each entry before answering.
    pub fn append_audit_in_background(&self) {
        if self.audit_queue.get().is_some() {
            return;
        }
        let (queue, mut receiver) = tokio::sync::mpsc::channel::<Queued>(AUDIT_QUEUE);
        if self.audit_queue.set(queue).is_err() {
            return;
        }
        let metadata = self.metadata.clone();
        tokio::spawn(async move {
            while let Some(first) = receiver.recv().await {
                let (mut events, mut flushed) = (Vec::new(), Vec::new());
                let mut next = Some(first);
                while let Some(item) = next.take() {
                    match item {
                        Queued::Event(e) => events.push(e),
                        Queued::Flush(done) => flushed.push(done),
                    }
                    if events.len() < AUDIT_BATCH {
                        next = receiver.try_recv().ok();
                    }
                }
                record_events(&metadata, &events).await;
                for done in flushed {
                    let _ = done.send(());
                }
            }
        });
    }

    /// Waits until every entry queued on this node so far is in the trail.
    pub async fn flush_audit(&self) {
        if let Some(queue) = self.audit_queue.get() {
            let (done, wait) = tokio::sync::oneshot::channel();
            if queue.send(Queued::Flush(done)).await.is_ok() {
                let _ = wait.await;
            }
        }
    }

    /// Audit entries after `after` (administrators only).
    pub async fn audit_entries(
        &self,
        caller: &Caller,
        after: i64,
        limit: u32,
    ) -> Result<Vec<AuditRecord>> {
        self.require_admin(caller, "read the audit trail")?;
        self.flush_audit().await;
        self.metadata.audit_entries(after, limit.min(1000)).await
    }

    /// The caller a live token of a live user proves (of `user`, when one is named).
    async fn by_token(&self, secret: &str, user: Option<&str>) -> Result<Option<Caller>> {
        if !secret.starts_with(TOKEN_PREFIX) {
            return Ok(None);
        }
        let key = sha256(secret);
        let metadata = self.metadata.clone();
        let token = self
            .tokens
            .try_get_with(key, async move {
                metadata.access_token_by_hash(&hex::encode(key)).await
            })
            .await
            .map_err(unshared)?;
        let Some(token) = token else { return Ok(None) };
        if token.revoked
            || token.expires_ms.is_some_and(|e| e <= now_ms())
            || user.is_some_and(|u| u != token.user)
        {
            return Ok(None);
        }
        let view = self.view().await?;
        let Some(record) = view.snapshot.users.iter().find(|u| u.name == token.user) else {
            return Ok(None);
        };
        if record.disabled {
            return Ok(None);
        }
        let scope = Scope::parse(&token.scope).unwrap_or(Scope::Groups(Vec::new()));
        Ok(Some(caller_of(record, &scope)))
    }

    async fn by_password(&self, user: &str, password: &str) -> Result<Option<Caller>> {
        let view = self.view().await?;
        let record = view.snapshot.users.iter().find(|u| u.name == user);
        let Some(record) = record.filter(|r| !r.disabled) else {
            return Ok(None);
        };
        let Some(stored) = &record.password_hash else {
            return Ok(None);
        };
        let key = sha256(&format!("{user}\u{0}{password}\u{0}{stored}"));
        if self.passwords.get(&key).is_none() {
            // Memory-hard on purpose: off the async workers.
            let (stored, password) = (stored.clone(), password.to_string());
            let verified = tokio::task::spawn_blocking(move || {
                PasswordHash::new(&stored).is_ok_and(|h| {
                    Argon2::default()
                        .verify_password(password.as_bytes(), &h)
                        .is_ok()
                })
            })
            .await
            .unwrap_or(false);
            if !verified {
                return Ok(None);
            }
            self.passwords.insert(key, ());
        }
        Ok(Some(caller_of(record, &Scope::User)))
    }

    /// What `caller` may do with the file `repo/path`.
    pub async fn actions_on(&self, caller: &Caller, repo: &str, path: &str) -> Result<Actions> {
        let view = self.view().await?;
        Ok(file_actions(&view, caller, self.anonymous_read, repo, path))
    }

    /// A check of single files for `caller` and `action`, answered from one view of the
    /// permissions: what a write's transaction asks of every file it changes.
    pub async fn checker(
        &self,
        caller: &Caller,
        action: Action,
    ) -> Result<impl Fn(&RepoKey, &str) -> Result<()> + Send + Sync + use<>> {
        let view = if caller.admin {
            None
        } else {
            Some(self.view().await?)
        };
        let (caller, anonymous_read) = (caller.clone(), self.anonymous_read);
        Ok(move |repo: &RepoKey, path: &str| match &view {
            Some(view)
                if !file_actions(view, &caller, anonymous_read, repo.as_str(), path)
                    .contains(action) =>
            {
                Err(caller.refused(&format!("{} {repo}/{path}", verb(action))))
            }
            _ => Ok(()),
        })
    }

    /// Whether some permission target grants `caller` `action` in `repo` (somewhere in it).
    pub async fn may_in_repository(
        &self,
        caller: &Caller,
        action: Action,
        repo: &str,
    ) -> Result<bool> {
        if caller.admin {
            return Ok(true);
        }
        let view = self.view().await?;
        Ok(view
            .targets
            .in_repository(&caller.grantees(), repo)
            .contains(action))
    }

    /// Whether `caller` may do anything at all in `repo` (what repository lists show).
    pub async fn may_use_repository(&self, caller: &Caller, repo: &str) -> Result<bool> {
        if caller.admin || (caller.anonymous && self.anonymous_read) {
            return Ok(true);
        }
        let view = self.view().await?;
        Ok(view.targets.in_repository(&caller.grantees(), repo) != Actions::default())
    }

    /// `Forbidden`/`Unauthorized` unless `caller` may do `action` with the file `repo/path`.
    pub async fn require(
        &self,
        caller: &Caller,
        action: Action,
        repo: &str,
        path: &str,
    ) -> Result<()> {
        if caller.admin || self.actions_on(caller, repo, path).await?.contains(action) {
            return Ok(());
        }
        Err(caller.refused(&format!("{} {repo}/{path}", verb(action))))
    }

    /// Whether `caller` may do `action` with some file below the folder `repo/folder`.
    pub async fn may_below(
        &self,
        caller: &Caller,
        action: Action,
        repo: &str,
        folder: &str,
    ) -> Result<bool> {
        if caller.admin || (action == Action::Read && caller.anonymous && self.anonymous_read()) {
            return Ok(true);
        }
        let view = self.view().await?;
        Ok(view
            .targets
            .below(&caller.grantees(), repo, folder)
            .contains(action))
    }

    /// `Forbidden`/`Unauthorized` unless `caller` is an administrator.
    pub fn require_admin(&self, caller: &Caller, what: &str) -> Result<()> {
        if caller.admin {
            Ok(())
        } else {
            Err(caller.refused(what))
        }
    }

    /// The users, groups and permission targets, read fresh (for the security API).
    pub async fn snapshot(&self) -> Result<SecuritySnapshot> {
        self.metadata.security_snapshot().await
    }

    /// Creates a token for `user` with `scope`, living `expires_in` (`None`: the default;
    /// zero: never, where no maximum is set). The secret is in the answer only.
    pub async fn create_token(
        &self,
        user: &UserRecord,
        scope: Scope,
        expires_in: Option<Duration>,
        description: &str,
        refreshable: bool,
    ) -> Result<NewToken> {
        if scope == Scope::Admin && !user.admin {
            return Err(Error::Forbidden(format!(
                "{} is not an administrator: no admin-scoped token for it",
                user.name
            )));
        }
        if let Scope::Groups(groups) = &scope
            && let Some(g) = groups.iter().find(|g| !user.groups.contains(g))
        {
            return Err(Error::InvalidInput(format!(
                "{} is not a member of group {g:?}",
                user.name
            )));
        }
        let expires_in = expires_in.unwrap_or(self.tokens_settings.default_expiry);
        let now = now_ms();
        let expires_ms = match (expires_in.is_zero(), self.tokens_settings.max_expiry) {
            (true, None) => None,
            (true, Some(max)) => {
                return Err(Error::InvalidInput(format!(
                    "tokens that never expire are not allowed here (at most {} s)",
                    max.as_secs()
                )));
            }
            (false, Some(max)) if expires_in > max => {
                return Err(Error::InvalidInput(format!(
                    "expires_in {} s is over the maximum of {} s",
                    expires_in.as_secs(),
                    max.as_secs()
                )));
            }
            (false, _) => {
                Some(now.saturating_add(i64::try_from(expires_in.as_millis()).unwrap_or(i64::MAX)))
            }
        };
        let token = new_token(TokenRecord {
            id: String::new(),
            user: user.name.clone(),
            scope: scope.text(),
            description: description.to_string(),
            created_ms: now,
            expires_ms,
            revoked: false,
            refreshable,
        });
        self.metadata
            .create_access_token(
                &token.record,
                &hex::encode(sha256(&token.secret)),
                token.refresh_hash().as_deref(),
            )
            .await?;
        Ok(token)
    }

    /// Replaces the token a refresh token belongs to by a new one (same user, scope and
    /// lifetime, refreshable again), revoking the old: a refresh token works once. Refused
    /// like bad credentials when it is unknown, used already, or its user is disabled.
    pub async fn refresh_token(&self, refresh: &str, source: &str) -> Result<NewToken> {
        let denied = || Error::Unauthorized("bad credentials".into());
        self.throttled(None, source)?;
        let Some(old) = self
            .metadata
            .access_token_by_refresh(&hex::encode(sha256(refresh.trim())))
            .await?
        else {
            self.failed(None, source);
            return Err(denied());
        };
        let user = self
            .snapshot()
            .await?
            .users
            .into_iter()
            .find(|u| u.name == old.user);
        if user.is_none_or(|u| u.disabled) {
            return Err(denied());
        }
        let now = now_ms();
        let token = new_token(TokenRecord {
            id: String::new(),
            created_ms: now,
            expires_ms: old.expires_ms.map(|e| now + (e - old.created_ms).max(0)),
            revoked: false,
            refreshable: true,
            ..old.clone()
        });
        let replaced = self
            .metadata
            .replace_access_token(
                &old.id,
                &token.record,
                &hex::encode(sha256(&token.secret)),
                token.refresh_hash().as_deref(),
            )
            .await?;
        if !replaced {
            return Err(denied());
        }
        self.changed();
        // The refresh token is the token's own user's credential.
        let owner = Caller {
            name: old.user.clone(),
            anonymous: false,
            ..Caller::anonymous().from_source(source)
        };
        let detail = format!("replaced by {}", token.record.id);
        self.audit(&owner, "token.refresh", &old.id, &detail).await;
        Ok(token)
    }

    /// Revokes a token; `NotFound` when no live token has that id.
    pub async fn revoke_token(&self, id: &str) -> Result<()> {
        let revoked = self.metadata.revoke_access_token(id).await?;
        self.changed();
        if revoked {
            Ok(())
        } else {
            Err(Error::NotFound {
                what: format!("a live token with id {id}"),
            })
        }
    }
}

/// What `caller` may do with the file `repo/path`, by `view`.
fn file_actions(
    view: &View,
    caller: &Caller,
    anonymous_read: bool,
    repo: &str,
    path: &str,
) -> Actions {
    if caller.admin {
        return Action::ALL
            .iter()
            .fold(Actions::default(), |set, a| set.with(*a));
    }
    let actions = view.targets.on_file(&caller.grantees(), repo, path);
    if caller.anonymous && anonymous_read {
        actions.with(Action::Read)
    } else {
        actions
    }
}

async fn record_events(metadata: &Metadata, events: &[AuditEvent]) {
    if let Err(e) = metadata.append_audit_batch(events).await {
        for event in events {
            tracing::error!(action = %event.action, target = %event.target, error = %e, "could not append to the audit trail");
        }
    }
}

/// What the audit writer is given: an entry, or a request to say when all before it are in.
enum Queued {
    Event(AuditEvent),
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// Entries that may wait for the background writer; more make their changes wait.
const AUDIT_QUEUE: usize = 10_000;
/// Entries appended per transaction, at most.
const AUDIT_BATCH: usize = 256;

/// A token's secrets for `record` (its id filled in): the access token, and a refresh token
/// when it is refreshable.
fn new_token(mut record: TokenRecord) -> NewToken {
    record.id = hex::encode(rand::random::<[u8; 16]>());
    let secret = format!("{TOKEN_PREFIX}{}", hex::encode(rand::random::<[u8; 32]>()));
    let refresh = record
        .refreshable
        .then(|| format!("stwr_{}", hex::encode(rand::random::<[u8; 32]>())));
    NewToken {
        record,
        secret,
        refresh,
    }
}

impl NewToken {
    fn refresh_hash(&self) -> Option<String> {
        self.refresh.as_deref().map(|r| hex::encode(sha256(r)))
    }
}

/// An error a cache shares between the callers that waited for one load.
fn unshared(e: Arc<Error>) -> Error {
    Arc::try_unwrap(e).unwrap_or_else(|e| Error::Metadata {
        source: e.to_string().into(),
        retryable: e.is_retryable(),
    })
}

/// The caller a user is, through a token of `scope` (or its password: [`Scope::User`]).
fn caller_of(user: &UserRecord, scope: &Scope) -> Caller {
    let (direct, groups) = match scope {
        Scope::User | Scope::Admin => (true, user.groups.clone()),
        Scope::Groups(named) => (
            false,
            named
                .iter()
                .filter(|g| user.groups.contains(g))
                .cloned()
                .collect(),
        ),
    };
    Caller {
        name: user.name.clone(),
        admin: user.admin && !matches!(scope, Scope::Groups(_)),
        direct,
        groups,
        anonymous: false,
        source: "-".into(),
    }
}

fn verb(action: Action) -> &'static str {
    match action {
        Action::Read => "read",
        Action::Annotate => "annotate",
        Action::Deploy => "deploy to",
        Action::Delete => "delete or overwrite",
        Action::Manage => "manage",
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;

    use super::*;

    fn basic(user_and_secret: &str) -> String {
        let encoded = base64::engine::general_purpose::STANDARD.encode(user_and_secret);
        format!("Basic {encoded}")
    }

    #[test]
    fn bearer_basic_and_api_key_credentials() {
        let parse = |auth: &str| Credentials::from_headers(Some(auth), None).ok();
        let token = |s: &str| Some(Credentials::Token(s.into()));
        assert_eq!(parse("Bearer stw_secret"), token("stw_secret"));
        assert_eq!(parse("bearer stw_secret"), token("stw_secret"));
        assert_eq!(
            parse(&basic("admin:stw_secret")),
            Some(Credentials::Basic {
                user: "admin".into(),
                secret: "stw_secret".into()
            })
        );
        assert_eq!(
            Credentials::from_headers(None, None).ok(),
            Some(Credentials::None)
        );
        assert_eq!(
            Credentials::from_headers(None, Some("stwt_key")).ok(),
            token("stwt_key")
        );
        assert_eq!(parse("Basic !!!"), None);
        assert_eq!(parse("Token stw_secret"), None);
    }
}
