//! What the service needs to know of the configuration, as plain values (the configuration
//! file itself is `stowage_config`'s).

use std::time::Duration;

use crate::locks::LockSettings;
use crate::security::TokenSettings;

/// The service's settings; each default is the configuration file's.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Leases and waits of the locks this node takes (`[cluster] lock_lease_secs`,
    /// `lock_wait_secs`; 30 s each).
    pub locks: LockSettings,
    /// Clients whose `User-Agent` contains one of these (any case) get bytes, never a
    /// redirect (`[downloads] proxy_user_agents`; none).
    pub proxy_user_agents: Vec<String>,
    /// How long an upload session and its URLs stay valid (`[uploads] session_expiry_secs`;
    /// 1 hour; at least 1 s).
    pub session_expiry: Duration,
    /// Whether deletes go to the trash (`[trashcan] enabled`; yes). Off, they remove at once;
    /// what the trash already holds still stays for its retention.
    pub trash_enabled: bool,
    /// How long deleted artifacts stay restorable (`[trashcan] retentionPeriodDays`; 14 days).
    pub trash_retention: Duration,
    /// Stored bytes younger than this are left alone by garbage collection
    /// (`[gc] orphan_grace_secs`; 1 hour).
    pub orphan_grace: Duration,
    /// Whether every anonymous caller may read (`anonymous_read`; no): a shorthand for a
    /// read permission granted to `anonymous` on every repository.
    pub anonymous_read: bool,
    /// Access tokens' lifetimes (`[security] token_default_expiry_secs`, `token_max_expiry_secs`).
    pub tokens: TokenSettings,
    /// The SHA-256 of the cluster's secret (`[cluster] secret`), which alone opens the peer
    /// endpoint of the cluster queue; `None`: the endpoint is closed.
    pub cluster_key_sha256: Option<[u8; 32]>,
    /// A node whose last heartbeat is older than this is not asked to hold or serve queued
    /// copies (three heartbeats).
    pub peer_liveness: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            locks: LockSettings::default(),
            proxy_user_agents: Vec::new(),
            session_expiry: Duration::from_secs(3600),
            trash_enabled: true,
            trash_retention: Duration::from_secs(14 * 86_400),
            orphan_grace: Duration::from_secs(3600),
            anonymous_read: false,
            tokens: TokenSettings::default(),
            cluster_key_sha256: None,
            peer_liveness: Duration::from_secs(15),
        }
    }
}
