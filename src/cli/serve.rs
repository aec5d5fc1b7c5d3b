//! `dspy-rhai serve`: serve a retriever over DSPy's ColBERTv2 protocol, so
//! other machines and Python DSPy (`dspy.ColBERTv2(url=...)`) can use it.

use std::io::Write as _;
use std::sync::Arc;

use anyhow::Context as _;

use super::common::RetrieverArgs;
use crate::retrieve::serve::{Server, DEFAULT_PORT};

/// Serve the index over DSPy's ColBERTv2 protocol (GET/POST, /health).
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub retriever: RetrieverArgs,
    /// Address to listen on (use 0.0.0.0 to serve other machines).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on; 0 picks a free one.
    #[arg(long, default_value_t = DEFAULT_PORT)]
    pub port: u16,
    /// Worker threads (0 = one per core).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub threads: usize,
    /// No request log lines on stderr.
    #[arg(long)]
    pub quiet: bool,
}

/// Runs `dspy-rhai serve` until Ctrl-C.
pub fn run(args: Args) -> anyhow::Result<()> {
    let (spec, remote) = args.retriever.choose(true, None)?;
    let retriever = spec.open(&remote)?;
    let description = retriever.description();
    let log: crate::retrieve::serve::RequestLog = if args.quiet {
        None
    } else {
        Some(Arc::new(|line: &str| eprintln!("{line}")))
    };
    let server = Server::start(retriever, &args.host, args.port, args.threads, log)
        .with_context(|| format!("listening on {}:{}", args.host, args.port))?;
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    ctrlc::set_handler(move || {
        let _ = tx.send(());
    })
    .context("installing the Ctrl-C handler")?;
    println!("listening on {}", server.url());
    let _ = std::io::stdout().flush();
    eprintln!("serving {description}; Ctrl-C to stop");
    let _ = rx.recv();
    eprintln!("shutting down: finishing requests in flight");
    server.shutdown();
    Ok(())
}
