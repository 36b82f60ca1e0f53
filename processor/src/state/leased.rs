//! Checkpoints of leased Kinesis shards go to their lease items
//! (`coordination = "leases"`), everything else to the configured store.
//!
//! A leased shard's position reaches the commit as `<generation>:<sequence>`:
//! the generation is the coordinator's count of the lease's acquisitions when
//! the reader started. A position of an earlier tenure (batches still in the
//! pipeline when the lease was lost, committed after it was taken back) is
//! dropped instead of moving the checkpoint backwards.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;

use super::{Committed, StateError, StateStore};
use crate::sources::kinesis::leases::{LeaseCoordinator, LeaseError};

/// Compresses a shard's window snapshot for its lease (the coordinator puts
/// it in the item, or in S3 when it is over `leases::MAX_INLINE`).
pub fn pack(json: &[u8]) -> Result<Vec<u8>, StateError> {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(json).and_then(|_| gz.finish()).map_err(|e| StateError::Invalid(e.to_string()))
}

/// The JSON of a packed snapshot.
pub fn unpack(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes).read_to_end(&mut out)?;
    Ok(out)
}

pub struct LeasedStore {
    pub inner: Option<Box<dyn StateStore>>,
    /// Source name → its lease coordinator.
    pub leases: BTreeMap<String, Arc<LeaseCoordinator>>,
}

impl LeasedStore {
    /// The coordinator and shard of a position key, when it is leased.
    fn leased<'a>(&'a self, key: &'a str) -> Option<(&'a Arc<LeaseCoordinator>, &'a str)> {
        let (source, shard) = key.split_once('/')?;
        self.leases.get(source).map(|c| (c, shard))
    }
}

#[async_trait]
impl StateStore for LeasedStore {
    async fn load(&self) -> Result<Option<Committed>, StateError> {
        // Leased shards resume from their lease, not from here.
        let Some(inner) = &self.inner else { return Ok(None) };
        let mut c = inner.load().await?;
        if let Some(c) = &mut c {
            c.positions.retain(|k, _| self.leased(k).is_none());
        }
        Ok(c)
    }

    async fn commit(&self, c: &Committed, changed: &[String]) -> Result<(), StateError> {
        for key in changed {
            let Some((coord, shard)) = self.leased(key) else { continue };
            let Some(pos) = c.positions.get(key) else { continue };
            let Some((gen, seq)) = pos.split_once(':').and_then(|(g, s)| Some((g.parse::<u64>().ok()?, s))) else {
                return Err(StateError::Invalid(format!("leased position {key} = {pos} has no generation")));
            };
            if coord.generation(shard).await != Some(gen) {
                tracing::info!(shard = %key, "checkpoint of an earlier tenure of the lease dropped");
                continue;
            }
            // The shard's windows at exactly this position, in the same write.
            let packed = match c.shard_windows.get(key) {
                Some(json) => Some(pack(json)?),
                None => None,
            };
            match coord.checkpoint(shard, seq, packed.as_deref()).await {
                Ok(()) => {}
                // Taken by another instance: it reads on from the lease's last
                // checkpoint; what this one delivered since has the same finding Ids.
                Err(LeaseError::Lost(_)) => {
                    tracing::warn!(shard = %key, "lease lost before its checkpoint: the new owner reads on from the last one")
                }
                Err(LeaseError::Aws { operation, message, retryable }) => {
                    return Err(StateError::Aws { operation, message, retryable })
                }
                Err(e @ LeaseError::Invalid { .. }) => return Err(StateError::Invalid(e.to_string())),
            }
        }
        let Some(inner) = &self.inner else { return Ok(()) };
        let mut rest = c.clone();
        rest.positions.retain(|k, _| self.leased(k).is_none());
        let changed: Vec<String> = changed.iter().filter(|k| self.leased(k).is_none()).cloned().collect();
        inner.commit(&rest, &changed).await
    }

    fn describe(&self) -> String {
        let inner = self.inner.as_ref().map(|s| s.describe()).unwrap_or_else(|| "no store".into());
        format!("lease table (leased shards) and {inner}")
    }
}
