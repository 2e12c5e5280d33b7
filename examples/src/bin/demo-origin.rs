//! `demo-origin`: a JSON echo origin to put behind Tollgate (see the library docs for paths).
//!
//! ```text
//! demo-origin --listen 127.0.0.1:8081 --name origin
//! demo-origin --listen 127.0.0.1:0 --name eu   # prints the port it picked
//! ```

use std::io::Write as _;
use std::net::SocketAddr;

use anyhow::Context as _;
use clap::Parser;

#[derive(Parser)]
#[command(about = "JSON echo origin for trying Tollgate")]
struct Args {
    /// Address to listen on; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:8081")]
    listen: SocketAddr,
    /// Name reported in every answer (`origin` field, `x-demo-origin` header).
    #[arg(long, default_value = "origin")]
    name: String,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("bind {}", args.listen))?;
    let addr = listener.local_addr()?;
    // First stdout line is a contract: scripts read the picked port from it.
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on http://{addr}")?;
    out.flush()?;
    drop(out);
    let shutdown = async {
        // If the signal handler cannot be installed, run until killed.
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    tollgate_examples::serve(listener, &args.name, shutdown).await
}
