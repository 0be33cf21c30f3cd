//! XA recovery throughput: 10,000 leftover prepared branches over 2 real MariaDB shards, each
//! with a `commit` decision in the commit log, ended by resolver rounds; next to it, in the
//! same run and on the same servers, the floor: the same `XA COMMIT` statements sent directly
//! over one TCP connection per shard (shards in parallel, as the resolver does). Prints both and
//! the ratio (goal: at most 1.5x). The two sides alternate in 4 chunks of 2,500 branches, so
//! drift in the machine's background load (disk flushes dominate both) hits both alike.
//!
//! Run: `cargo bench -p kunlun-tests --bench xa_resolve`. Under `cargo test --all-targets` (no
//! `--bench` argument) it does a smoke run with 200 branches.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use kunlun_core::xa::KunlunXid;
use kunlun_tests::xa::XaEnv;
use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use tokio::task::JoinSet;

/// Concurrent sessions per shard while preparing branches (each branch needs its own session).
const PREPARE_WORKERS: usize = 8;

/// Prepares `per_shard` branches on each shard, each inserting one row, and leaves them
/// detached. Xids belong to compute node `cn` and started a minute ago (past any deadline).
async fn make_branches(
    env: &XaEnv,
    cn: u32,
    per_shard: usize,
    id_base: i64,
) -> Result<Vec<Vec<KunlunXid>>> {
    let start_ts = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs()
        - 60) as u32;
    let mut out = Vec::new();
    for (s, db) in env.shards.iter().enumerate() {
        let xids: Vec<KunlunXid> = (0..per_shard)
            .map(|k| KunlunXid {
                comp_node_id: cn,
                start_ts,
                local_xid: (s * per_shard + k) as u32,
            })
            .collect();
        let mut set = JoinSet::new();
        for w in 0..PREPARE_WORKERS {
            let mine: Vec<(i64, KunlunXid)> = xids
                .iter()
                .enumerate()
                .filter(|(k, _)| k % PREPARE_WORKERS == w)
                .map(|(k, x)| (id_base + (s * per_shard + k) as i64, *x))
                .collect();
            let url = db.url();
            set.spawn(async move {
                for (id, x) in mine {
                    let mut c = Conn::from_url(url.as_str()).await?;
                    c.query_drop(format!(
                        "XA START '{x}'; INSERT INTO bank.bench VALUES ({id}); XA END '{x}'; XA PREPARE '{x}'"
                    ))
                    .await?;
                    c.disconnect().await?;
                }
                anyhow::Ok(())
            });
        }
        while let Some(r) = set.join_next().await {
            r??;
        }
        out.push(xids);
    }
    Ok(out)
}

/// Logs `commit` for every xid, in multi-row inserts.
async fn log_commits(env: &XaEnv, xids: &[Vec<KunlunXid>]) -> Result<()> {
    let mut meta = env.meta_conn().await?;
    let all: Vec<&KunlunXid> = xids.iter().flatten().collect();
    for chunk in all.chunks(1000) {
        let values: Vec<String> = chunk
            .iter()
            .map(|x| format!("({}, {}, 'commit')", x.comp_node_id, x.txn_id()))
            .collect();
        meta.query_drop(format!(
            "INSERT INTO commit_log_{} (comp_node_id, txn_id, next_txn_cmd) VALUES {}",
            env.cluster.name,
            values.join(",")
        ))
        .await?;
    }
    Ok(())
}

/// The floor: `XA COMMIT` of every xid over one connection per shard, shards in parallel.
async fn floor_commit(env: &XaEnv, xids: &[Vec<KunlunXid>]) -> Result<Duration> {
    let mut conns = Vec::new();
    for db in &env.shards {
        // TCP like the resolver (mysql_async would otherwise switch to the Unix socket).
        let opts = mysql_async::OptsBuilder::from_opts(mysql_async::Opts::from_url(&db.url())?)
            .prefer_socket(false);
        conns.push(Conn::new(opts).await?);
    }
    let t0 = Instant::now();
    let mut set = JoinSet::new();
    for (mut c, mine) in conns.into_iter().zip(xids.iter().cloned()) {
        set.spawn(async move {
            for x in mine {
                c.query_drop(format!("XA COMMIT '{x}'")).await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    Ok(t0.elapsed())
}

/// Branches of one side of one chunk, per shard.
fn chunk_ids(chunk: usize, side: u32) -> (u32, i64) {
    // A compute node id per chunk and side keeps xids apart; ids of rows never collide.
    let cn = chunk as u32 * 2 + side + 1;
    (cn, i64::from(cn) * 1_000_000)
}

async fn bench(per_shard: usize, chunks: usize) -> Result<()> {
    let env = XaEnv::start(2).await.context("servers")?;
    for db in &env.shards {
        db.sql("CREATE TABLE bank.bench (id BIGINT PRIMARY KEY) ENGINE=InnoDB")?;
    }
    let per_chunk = per_shard / chunks;
    let total = per_chunk * chunks * env.shards.len();
    let (mut resolver, _) = env.resolver();
    // Floor and resolver alternate chunk by chunk, so a change in the machine's background
    // load (disk flushes dominate both) hits both sides alike.
    let (mut floor, mut took) = (Duration::ZERO, Duration::ZERO);
    for chunk in 0..chunks {
        let (cn, base) = chunk_ids(chunk, 0);
        let xids = make_branches(&env, cn, per_chunk, base)
            .await
            .context("floor branches")?;
        floor += floor_commit(&env, &xids).await.context("floor")?;
        if !env.all_prepared()?.is_empty() {
            bail!("the floor left branches prepared");
        }

        let (cn, base) = chunk_ids(chunk, 1);
        let xids = make_branches(&env, cn, per_chunk, base)
            .await
            .context("resolver branches")?;
        log_commits(&env, &xids).await.context("commit log")?;
        let t0 = Instant::now();
        let round = resolver.round().await.context("resolver round")?;
        took += t0.elapsed();
        let t = round.total();
        if t.committed != per_chunk * env.shards.len() || !env.all_prepared()?.is_empty() {
            bail!("resolver did not commit every branch: {t:?}");
        }
    }
    let rows = env.shards[0]
        .value("SELECT COUNT(*) FROM bank.bench")?
        .unwrap_or_default();
    if rows != total.to_string() {
        bail!("shard 1 holds {rows} rows, expected {total}");
    }

    let per_s = |d: Duration| total as f64 / d.as_secs_f64();
    println!(
        "xa_resolve: {total} prepared branches over {} shards, in {chunks} alternating chunks",
        env.shards.len()
    );
    println!(
        "  floor    (direct XA COMMIT, 1 conn/shard):            {:>8.1} ms  {:>7.0} branches/s",
        floor.as_secs_f64() * 1e3,
        per_s(floor)
    );
    println!(
        "  resolver (rounds incl. XA RECOVER, range query):      {:>8.1} ms  {:>7.0} branches/s",
        took.as_secs_f64() * 1e3,
        per_s(took)
    );
    println!(
        "  ratio resolver/floor: {:.2}x (goal <= 1.5x)",
        took.as_secs_f64() / floor.as_secs_f64()
    );
    Ok(())
}

fn main() {
    // `cargo bench` passes `--bench`; under `cargo test --all-targets` only a smoke run.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let (per_shard, chunks) = if smoke { (100, 1) } else { (5_000, 4) };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("xa_resolve: no runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(bench(per_shard, chunks)) {
        eprintln!("xa_resolve failed: {e:#}");
        std::process::exit(1);
    }
}
