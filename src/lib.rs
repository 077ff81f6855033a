//! opsec-operator: the operational security of ITU-T X.1642 as Kubernetes custom resources.
//!
//! `api` holds the resource types; `controller` the reconcilers that talk to the cluster;
//! `runtime` the process around them (admin port, leader election, shutdown). Pure logic that
//! needs no cluster lives in its own modules so it is unit tested directly.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod api;
pub mod backup;
pub mod baseline;
pub mod config;
pub mod controller;
pub mod error;
pub mod metrics;
pub mod runtime;
pub mod schedule;
pub mod signals;
pub mod telemetry;

pub use error::Error;

/// Field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "opsec-operator";

/// Selects rustls's ring provider for the whole process: the one crypto stack (kube's client
/// and the S3 client both take it; deny.toml refuses a second). Every entry point calls this
/// before making a client, and the S3 store does too. Calling it again does nothing.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
