//! One-off commands on the manager host (`cluster-mgr token create`): they open the metadata
//! store the config names directly, without a running daemon, so the first admin token can be
//! made by whoever can read the config and the store (the manager host's operator).
//!
//! Invariant: the secret goes to stdout only, once; nothing is logged of it.

use anyhow::Context;
use kunlun_meta::auth::Role;
use kunlun_meta::Store;

use crate::config::{Command, Config, TokenCommand};

/// Runs `command` and returns what to print on stdout.
pub fn run(config: &Config, command: &Command) -> anyhow::Result<String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        crate::files::secure_existing(config).context("cannot narrow the modes of secret files")?;
        let store = Store::open(&crate::store_config(config))
            .await
            .context("cannot open the metadata store")?;
        match command {
            Command::Token(TokenCommand::Create { name, role }) => {
                let role: Role = role.parse()?;
                let t = crate::http::tokens::create_token(&store, name, role).await?;
                // A fresh SQLite store: make sure its new files are narrow too.
                crate::files::secure_existing(config)?;
                Ok(format!("{}\n", t.token))
            }
        }
    })
}
