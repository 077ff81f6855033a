//! The `opsec-operator` command: argument parsing only; every subcommand's work lives in the
//! library.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "opsec-operator",
    version,
    about = "Operational security of ITU-T X.1642 for multi-tenant Kubernetes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the operator: controllers, leader election, admin port.
    Run(opsec_operator::config::RunArgs),
    /// Print every CRD as YAML, or write one file per CRD into --dir.
    Crd {
        /// Write `<plural>.<group>.yaml` files into this directory instead of printing.
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
    },
    /// Disaster recovery without a cluster: list, verify and restore backups from a store.
    #[command(subcommand)]
    Backup(opsec_operator::backup::cli::BackupCommand),
    /// Print the version.
    Version,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    opsec_operator::install_crypto_provider();
    let result = match cli.command {
        Command::Run(args) => opsec_operator::runtime::run(args).await,
        Command::Crd { dir } => opsec_operator::api::write_crds(dir.as_deref()),
        Command::Backup(cmd) => opsec_operator::backup::cli::run(cmd)
            .await
            .map_err(Into::into),
        Command::Version => {
            println!("opsec-operator {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", opsec_operator::backup::error_chain(&err));
            std::process::ExitCode::FAILURE
        }
    }
}
