//! The crate-level error: what a subcommand can fail with. Each module keeps its own error enum;
//! this one only gathers them so `main` can print the chain.

/// Errors a subcommand can end with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Crd(#[from] crate::api::CrdError),
    #[error(transparent)]
    Runtime(#[from] crate::runtime::RuntimeError),
    #[error(transparent)]
    Backup(#[from] crate::backup::cli::CliError),
}
