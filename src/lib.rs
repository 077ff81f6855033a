//! opsec-operator: the operational security of ITU-T X.1642 as Kubernetes custom resources.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod api;
