//! Stowage's service layer and its HTTP API. `service` holds the operations (deploy, read,
//! delete, garbage collection) over a provider chain and the metadata store; `http` is the one
//! module that knows axum: it maps requests to those operations and domain errors to
//! Artifactory-shaped responses. Function binaries build [`http::router`] once and serve it.

pub mod auth;
pub mod cluster;
pub mod config;
pub mod filestore;
pub mod function;
pub mod http;
pub mod locks;
pub mod secrets;
pub mod service;
pub mod tasks;

pub use config::Config;
pub use filestore::Filestore;
pub use service::{DeployRequest, GcReport, SessionStart, Stowage};
