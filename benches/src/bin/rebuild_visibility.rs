//! Times the one-off rebuild of the visibility indexes that a directory from an older index
//! format goes through at its first start (`chronicle_storage::visibility::rebuild`), on a
//! stopped node's data directory, shard by shard:
//!
//!     rebuild_visibility DATA_DIR
//!
//! It rewrites the indexes in place (same rows as before, so the directory stays usable).

use std::path::PathBuf;
use std::time::Instant;

use chronicle_storage::{Db, DbOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir: PathBuf = args
        .next()
        .ok_or("usage: rebuild_visibility DATA_DIR")?
        .into();
    let db = Db::open(&dir, DbOptions::default())?;
    let shards = db
        .shard_count()?
        .ok_or("the directory records no shard count: not a Chronicle data directory")?;
    let started = Instant::now();
    let mut total = 0u64;
    for shard in 0..shards {
        let shard_started = Instant::now();
        let runs = chronicle_storage::visibility::rebuild(&db, shard)?;
        total += runs;
        println!(
            "shard {shard}: {runs} runs indexed in {:.2} s",
            shard_started.elapsed().as_secs_f64()
        );
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "rebuilt the indexes of {total} runs in {seconds:.1} s ({:.0} runs/s)",
        total as f64 / seconds.max(1e-9)
    );
    Ok(())
}
