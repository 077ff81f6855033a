//! opsec-operator: the operational security of ITU-T X.1642 as Kubernetes custom resources.
//!
//! `api` holds the resource types; `controller` the reconcilers that talk to the cluster;
//! `runtime` the process around them (admin port, leader election, shutdown). Pure logic that
//! needs no cluster lives in its own modules so it is unit tested directly.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod api;
pub mod config;
pub mod controller;
pub mod error;
pub mod metrics;
pub mod runtime;
pub mod telemetry;

pub use error::Error;
