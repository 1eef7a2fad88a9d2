//! A state-aware mount (Artifactory's `state-aware` sub-provider): a provider that the sharding
//! provider marks down when it fails, and tries again every `checkPeriod`. `writeEnabled=false`
//! keeps it readable (and cleanable by garbage collection) but never written.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::{BinaryProvider, Error, Health};

/// How long a health probe of a mount that was down may take before it counts as failed.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// What a mount is, as configured.
#[derive(Debug, Clone)]
pub struct MountSettings {
    /// The mount's name in configuration, logs and `/api/storageinfo`.
    pub id: String,
    /// The sharding zone it belongs to (`zone` of Artifactory's state-aware provider).
    pub zone: Option<String>,
    /// `false`: read, balanced from and cleaned, but never written.
    pub write_enabled: bool,
    /// The least time between two attempts to bring back a mount that failed.
    pub check_period: Duration,
}

impl MountSettings {
    /// A writable mount outside any zone, checked every 15 s (Artifactory's defaults).
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            zone: None,
            write_enabled: true,
            check_period: Duration::from_secs(15),
        }
    }
}

#[derive(Debug)]
struct Down {
    since: Instant,
    last_check: Instant,
    error: String,
}

#[derive(Debug, Default)]
struct State {
    down: Option<Down>,
    /// The last free-space sample and when it was taken.
    sample: Option<(Instant, Health)>,
}

/// One sub-provider of a sharded store, with its state.
#[derive(Debug)]
pub(crate) struct Mount {
    pub(crate) settings: MountSettings,
    pub(crate) provider: Arc<dyn BinaryProvider>,
    state: Mutex<State>,
}

/// Whether an error says the mount itself is failing (as opposed to the request, or a missing
/// binary).
pub(crate) fn is_mount_failure(e: &Error) -> bool {
    matches!(
        e,
        Error::Storage { .. } | Error::BackendRefused { .. } | Error::Unavailable(_)
    )
}

impl Mount {
    pub(crate) fn new(settings: MountSettings, provider: Arc<dyn BinaryProvider>) -> Self {
        Self {
            settings,
            provider,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn id(&self) -> &str {
        &self.settings.id
    }

    /// Whether the mount is up, without probing it.
    pub(crate) fn is_up(&self) -> bool {
        self.state().down.is_none()
    }

    /// Whether the mount can be used now. A mount that is down is probed (its `health`) when
    /// its check period has passed since the last attempt; one caller probes, the others see
    /// it still down until the probe succeeds.
    pub(crate) async fn usable(&self) -> bool {
        {
            let mut state = self.state();
            let Some(down) = &mut state.down else {
                return true;
            };
            if down.last_check.elapsed() < self.settings.check_period {
                return false;
            }
            down.last_check = Instant::now();
        }
        match tokio::time::timeout(PROBE_TIMEOUT, self.provider.health()).await {
            Ok(Ok(health)) => {
                let mut state = self.state();
                if let Some(down) = state.down.take() {
                    tracing::info!(mount = %self.id(), down_for = ?down.since.elapsed(),
                        "a mount is back; balancing will restore the copies it missed");
                }
                state.sample = Some((Instant::now(), health));
                true
            }
            Ok(Err(e)) => {
                self.note_probe_failure(e.to_string());
                false
            }
            Err(_) => {
                self.note_probe_failure(format!(
                    "no answer to a health check in {PROBE_TIMEOUT:?}"
                ));
                false
            }
        }
    }

    fn note_probe_failure(&self, error: String) {
        let mut state = self.state();
        if let Some(down) = &mut state.down {
            tracing::debug!(mount = %self.settings.id, %error, "a mount that is down is still down");
            down.error = error;
        }
    }

    /// Records a failure of an operation on this mount; a mount failure marks it down.
    pub(crate) fn failed(&self, e: &Error) {
        if !is_mount_failure(e) {
            return;
        }
        let mut state = self.state();
        if state.down.is_none() {
            tracing::warn!(mount = %self.settings.id, error = %e,
                retry_in = ?self.settings.check_period, "a mount failed and is marked down");
        }
        let now = Instant::now();
        let since = state.down.as_ref().map_or(now, |d| d.since);
        state.down = Some(Down {
            since,
            last_check: now,
            error: e.to_string(),
        });
    }

    /// Free space, sampled at most every `interval`. `None` when the mount cannot tell.
    pub(crate) async fn free_space(&self, interval: Duration) -> Health {
        if let Some((at, health)) = &self.state().sample
            && at.elapsed() < interval
        {
            return health.clone();
        }
        match self.provider.health().await {
            Ok(health) => {
                self.state().sample = Some((Instant::now(), health.clone()));
                health
            }
            Err(e) => {
                self.failed(&e);
                Health::default()
            }
        }
    }

    /// State for `/api/storageinfo`: `None` when up, else how long it has been down and why.
    pub(crate) fn down_report(&self) -> Option<(Duration, String)> {
        self.state()
            .down
            .as_ref()
            .map(|d| (d.since.elapsed(), d.error.clone()))
    }
}
