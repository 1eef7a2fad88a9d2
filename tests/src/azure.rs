//! Azurite helpers (next)
