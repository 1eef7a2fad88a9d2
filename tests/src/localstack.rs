//! Where the tests' LocalStack comes from, chosen by one variable, `STOWAGE_TEST_LOCALSTACK`:
//!
//! - `host` (the default, and what these machines without a Docker engine use): a LocalStack
//!   process from the PyPI venv `localstack/lib.sh` installs, stopped by its PID;
//! - `container`: LocalStack's image, started through testcontainers' LocalStack module where a
//!   Docker engine exists (`DOCKER_HOST`, or `/var/run/docker.sock`), removed when done.
//!
//! The switch covers both the shared LocalStack scripts/test starts (in container mode through
//! the `localstack-container` binary of this crate) and the private ones an outage test starts,
//! kills and starts again on the same port ([`crate::s3::LocalStack`]). Either way LocalStack
//! is published on 127.0.0.1 only and checks presigned-URL signatures.

use std::time::Duration;

pub use testcontainers_modules::localstack::LocalStack as Image;
use testcontainers_modules::testcontainers::core::IntoContainerPort;
use testcontainers_modules::testcontainers::runners::AsyncRunner;
use testcontainers_modules::testcontainers::{ContainerAsync, ImageExt};

/// The variable that chooses.
pub const SOURCE_VAR: &str = "STOWAGE_TEST_LOCALSTACK";

/// The services the shared LocalStack runs: S3, and the two the functions read secrets from.
pub const SERVICES: &str = "s3,secretsmanager,ssm";

/// LocalStack's own settings, the same in both modes (localstack/lib.sh sets them for the host).
pub const SETTINGS: [(&str, &str); 4] = [
    ("DNS_ADDRESS", "0"),
    ("SKIP_SSL_CERT_DOWNLOAD", "1"),
    ("DISABLE_EVENTS", "1"),
    // Presigned uploads are checked as AWS would: a tampered or expired URL is refused.
    ("S3_SKIP_SIGNATURE_VALIDATION", "0"),
];

/// How long a container may take to be ready, the image pull included.
const CONTAINER_STARTUP: Duration = Duration::from_secs(300);

/// Where LocalStack comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A process on the host.
    Host,
    /// A container through testcontainers.
    Container,
}

impl Source {
    /// The choice of `STOWAGE_TEST_LOCALSTACK`; another value than the two is a mistake and
    /// panics with the choices.
    pub fn from_env() -> Self {
        let value = std::env::var(SOURCE_VAR).ok();
        Self::parse(value.as_deref()).unwrap_or_else(|message| panic!("{message}"))
    }

    /// `host` (also when unset or empty) or `container`.
    pub fn parse(value: Option<&str>) -> Result<Self, String> {
        match value.map(str::trim) {
            None | Some("" | "host") => Ok(Self::Host),
            Some("container") => Ok(Self::Container),
            Some(other) => Err(format!(
                "{SOURCE_VAR}={other:?}: expected `host` (the default: a LocalStack process on \
                 this machine) or `container` (LocalStack's image through testcontainers; needs \
                 a Docker engine)"
            )),
        }
    }
}

/// Starts LocalStack's container with `services`, published on 127.0.0.1:`host_port`. The
/// error names what is missing when there is no Docker engine.
pub async fn start_container(
    host_port: u16,
    services: &str,
) -> Result<ContainerAsync<Image>, String> {
    let mut request = Image::default().with_env_var("SERVICES", services);
    for (name, value) in SETTINGS {
        request = request.with_env_var(name, value);
    }
    request
        .with_mapped_port(host_port, 4566.tcp())
        .with_host_config_modifier(|config| {
            // testcontainers publishes on every interface; the tests' servers are loopback only.
            for binding in config
                .port_bindings
                .iter_mut()
                .flat_map(|bindings| bindings.values_mut())
                .flatten()
                .flatten()
            {
                binding.host_ip = Some("127.0.0.1".into());
            }
        })
        .with_startup_timeout(CONTAINER_STARTUP)
        .start()
        .await
        .map_err(|e| {
            format!(
                "could not start LocalStack's container: {e}. {SOURCE_VAR}=container needs a \
                 Docker engine (DOCKER_HOST={}); without one, leave {SOURCE_VAR} unset to run \
                 LocalStack on the host",
                std::env::var("DOCKER_HOST")
                    .unwrap_or_else(|_| "unset, so unix:///var/run/docker.sock".into())
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_is_the_default_and_a_typo_names_the_choices() {
        assert_eq!(Source::parse(None), Ok(Source::Host));
        assert_eq!(Source::parse(Some("")), Ok(Source::Host));
        assert_eq!(Source::parse(Some("host")), Ok(Source::Host));
        assert_eq!(Source::parse(Some("container")), Ok(Source::Container));
        let error = Source::parse(Some("docker")).expect_err("not a choice");
        assert!(error.contains("\"docker\""), "{error}");
        assert!(
            error.contains("`host`") && error.contains("`container`"),
            "{error}"
        );
    }
}
