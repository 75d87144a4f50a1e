//! `nettap-injector serve …` runs the webhook; `nettap-injector install-agent
//! DIR` is the init container's job (copy the agent into the pod's volume,
//! with no shell or `cp` needed in the image).

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use nettap_injector::{mutate::Config, server};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};

#[derive(Parser)]
#[command(name = "nettap-injector", version, about = "Gives Java pods nettap's JVM agent")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the mutating webhook over HTTPS.
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "0.0.0.0:8443")]
        listen: SocketAddr,
        /// Certificate chain (PEM).
        #[arg(long, env = "NETTAP_INJECTOR_TLS_CERT")]
        tls_cert: PathBuf,
        /// Private key (PEM).
        #[arg(long, env = "NETTAP_INJECTOR_TLS_KEY")]
        tls_key: PathBuf,
        /// Seconds between looks at the certificate and key files (they are
        /// re-read when they changed, e.g. renewed by cert-manager).
        #[arg(long, default_value_t = 5)]
        tls_check_secs: u64,
        /// Image of the init container that provides the agent.
        #[arg(long, env = "NETTAP_AGENT_IMAGE")]
        agent_image: String,
        /// Where the agent is mounted in the Java containers.
        #[arg(long, default_value = "/nettap-agent")]
        agent_dir: String,
        /// Also write every review body received to this directory (for
        /// debugging: the bodies hold whole pod specs).
        #[arg(long)]
        dump_reviews: Option<PathBuf>,
    },
    /// Copy the JVM agent into DIR (the init container's command).
    InstallAgent {
        /// Destination directory.
        dir: PathBuf,
        /// The agent in this image.
        #[arg(long, default_value = "/usr/local/lib/nettap/libnettap_agent.so")]
        agent: PathBuf,
    },
}

/// Resolves at SIGINT or SIGTERM (what the kubelet sends to stop a pod);
/// the handlers are installed before it returns.
fn stop_signal() -> Result<impl std::future::Future<Output = ()>> {
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(signal = name, "stopping");
    })
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt().with_writer(std::io::stderr).with_target(false).init();
    match Cli::parse().command {
        Command::Serve {
            listen,
            tls_cert,
            tls_key,
            tls_check_secs,
            agent_image,
            agent_dir,
            dump_reviews,
        } => {
            let stop = stop_signal()?;
            let tls = server::tls_config(&tls_cert, &tls_key, Duration::from_secs(tls_check_secs))?;
            let cfg = Config { agent_image, agent_dir, ..Config::default() };
            let listener = server::bind(listen).await?;
            tracing::info!(%listen, agent_option = cfg.agent_option(), "nettap injector serving /mutate");
            server::serve(listener, tls, cfg, dump_reviews, stop).await;
            Ok(())
        }
        Command::InstallAgent { dir, agent } => {
            let dest = dir.join("libnettap_agent.so");
            std::fs::copy(&agent, &dest)
                .with_context(|| format!("copying {} to {}", agent.display(), dest.display()))?;
            tracing::info!(dest = %dest.display(), "JVM agent installed");
            Ok(())
        }
    }
}
