//! Stowage's start-up: the configuration (one TOML file, `STOWAGE_*` variables over it), secret
//! references resolved once, and the one place the filestore template becomes a provider chain
//! ([`filestore::build`]). `stowage serve`, the CLI commands and the function binaries all
//! start here. Nothing in this crate runs per request.

pub mod backup;
pub mod config;
pub mod filestore;
pub mod secrets;
mod template;

pub use config::Config;
pub use template::{Backend, Template};
