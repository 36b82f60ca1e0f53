//! CPU-heavy work (gunzip and parse of a Kinesis batch or an S3 object) on
//! tokio's blocking pool, at most one job per core at once, so decoding never
//! holds the runtime's threads (HTTP probes, AWS calls, timers) and many
//! shards decoding at once do not oversubscribe the machine.

use std::sync::LazyLock;

use tokio::sync::Semaphore;

static PERMITS: LazyLock<Semaphore> =
    LazyLock::new(|| Semaphore::new(std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)));

/// Runs `f` on the bounded decode pool. Err only when `f` panicked outside
/// the per-unit guard (without the fail-fast hook: embedded use).
pub async fn decode<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
    let _permit = PERMITS.acquire().await.map_err(|e| e.to_string())?;
    tokio::task::spawn_blocking(f).await.map_err(|e| format!("decoding panicked: {e}"))
}
