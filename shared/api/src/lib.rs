//! Stowage's HTTP API, the one crate that knows axum and lambda_http. `http` maps requests to
//! the service's operations ([`stowage_service::Stowage`]) and domain errors to
//! Artifactory-shaped responses; `function` is the `main` of the function binaries, which build
//! [`http::router`] once and serve it under the Lambda runtime or on a port. No state is
//! reached here except through the service.

pub mod function;
pub mod http;
