//! The file store: `state.json` (commit number, positions, the name of the
//! window snapshot file) replaced atomically (write, fsync, rename), the
//! window snapshot in its own file written before it.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{Committed, StateError, StateStore};

const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct StateFile {
    version: u32,
    commit: u64,
    positions: BTreeMap<String, String>,
    windows_file: Option<String>,
}

#[derive(Clone)]
pub struct FileStore {
    dir: PathBuf,
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> StateError {
    move |error| StateError::Io { context, error }
}

impl FileStore {
    pub fn open(dir: &Path) -> Result<Self, StateError> {
        std::fs::create_dir_all(dir).map_err(io(format!("cannot create state directory {}", dir.display())))?;
        Ok(FileStore { dir: dir.to_path_buf() })
    }

    fn write_atomic(&self, name: &str, bytes: &[u8]) -> Result<(), StateError> {
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let dst = self.dir.join(name);
        let mut f = std::fs::File::create(&tmp).map_err(io(format!("cannot create {}", tmp.display())))?;
        f.write_all(bytes).map_err(io(format!("cannot write {}", tmp.display())))?;
        f.sync_all().map_err(io(format!("cannot sync {}", tmp.display())))?;
        std::fs::rename(&tmp, &dst).map_err(io(format!("cannot rename to {}", dst.display())))?;
        // The rename itself must reach the disk.
        if let Ok(d) = std::fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    fn commit_blocking(&self, c: &Committed) -> Result<(), StateError> {
        let windows_file = match &c.windows {
            Some(bytes) => {
                let name = format!("windows-{}.json", c.commit);
                self.write_atomic(&name, bytes)?;
                Some(name)
            }
            None => None,
        };
        let st = StateFile { version: VERSION, commit: c.commit, positions: c.positions.clone(), windows_file };
        let text = serde_json::to_vec_pretty(&st).map_err(|e| StateError::Invalid(e.to_string()))?;
        self.write_atomic("state.json", &text)?;
        // Older snapshots are no longer referenced.
        if let Ok(rd) = std::fs::read_dir(&self.dir) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with("windows-") && Some(&name) != st.windows_file.as_ref() {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        Ok(())
    }
}

#[async_trait]
impl StateStore for FileStore {
    async fn load(&self) -> Result<Option<Committed>, StateError> {
        let p = self.dir.join("state.json");
        let text = match std::fs::read(&p) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(format!("cannot read {}", p.display()))(e)),
        };
        let st: StateFile =
            serde_json::from_slice(&text).map_err(|e| StateError::Invalid(format!("{}: {e}", p.display())))?;
        if st.version != VERSION {
            return Err(StateError::Invalid(format!(
                "{}: version {} (this build reads {VERSION})",
                p.display(),
                st.version
            )));
        }
        let windows = match &st.windows_file {
            Some(name) => {
                let wp = self.dir.join(name);
                Some(std::fs::read(&wp).map_err(io(format!("cannot read {}", wp.display())))?)
            }
            None => None,
        };
        Ok(Some(Committed { commit: st.commit, positions: st.positions, windows, ..Committed::default() }))
    }

    async fn commit(&self, c: &Committed, _changed: &[String]) -> Result<(), StateError> {
        // Writes and fsyncs block: on the blocking pool, off the runtime's threads.
        let (me, c) = (self.clone(), c.clone());
        tokio::task::spawn_blocking(move || me.commit_blocking(&c)).await.map_err(|e| StateError::Io {
            context: format!("writing state in {}", self.dir.display()),
            error: std::io::Error::other(e.to_string()),
        })?
    }

    fn describe(&self) -> String {
        format!("file store in {}", self.dir.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn commits_round_trip_and_replace_snapshots() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        assert_eq!(store.load().await.unwrap(), None);
        let mut c = Committed { commit: 1, ..Committed::default() };
        c.positions.insert(Committed::key("k", "shardId-0"), "49590".into());
        c.windows = Some(b"{\"version\":1}".to_vec());
        store.commit(&c, &[]).await.unwrap();
        assert_eq!(store.load().await.unwrap(), Some(c.clone()));
        c.commit = 2;
        c.windows = Some(b"{\"version\":1,\"x\":2}".to_vec());
        store.commit(&c, &[]).await.unwrap();
        let again = FileStore::open(dir.path()).unwrap().load().await.unwrap().unwrap();
        assert_eq!(again, c);
        assert_eq!(again.positions_of("k").get("shardId-0").map(String::as_str), Some("49590"));
        let snaps = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("windows-"))
            .count();
        assert_eq!(snaps, 1, "old snapshots are removed");
    }

    #[tokio::test]
    async fn a_corrupt_state_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("state.json"), "{not json").unwrap();
        let e = FileStore::open(dir.path()).unwrap().load().await.unwrap_err().to_string();
        assert!(e.contains("state.json"), "{e}");
    }
}
