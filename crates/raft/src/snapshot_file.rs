//! Snapshot storage of a group: the snapshot file (`<data dir>/snapshots/group-<id>.snap`) and
//! the file-backed data openraft reads, writes and sends.

use std::io::{Read, Seek, SeekFrom};
use std::pin::Pin;
use std::task::{Context, Poll};

use chronicle_storage::ShardTables;

use crate::state_machine::Meta;

/// `<data dir>/snapshots/group-<id>.snap`: the meta's length (u32 BE), the meta (postcard), then
/// the dumped key range. Written to a temporary file, fsynced and renamed into place.
pub(crate) struct SnapshotFile {
    path: std::path::PathBuf,
}

impl SnapshotFile {
    pub(crate) fn of(tables: &ShardTables) -> Self {
        Self {
            path: tables
                .db()
                .path()
                .join("snapshots")
                .join(format!("group-{}.snap", tables.shard())),
        }
    }

    /// Writes `meta` and the dump read from `data` (streamed, not held in memory).
    pub(crate) fn write_from(&self, meta: &Meta, mut data: impl Read) -> std::io::Result<()> {
        let (tmp, mut file) = self.create_tmp("tmp", meta)?;
        std::io::copy(&mut data, &mut file)?;
        self.finish(file)?;
        self.commit(&tmp)
    }

    /// A new temporary file next to the snapshot file, with `meta`'s header written.
    pub(crate) fn create_tmp(
        &self,
        tag: &str,
        meta: &Meta,
    ) -> std::io::Result<(std::path::PathBuf, std::io::BufWriter<std::fs::File>)> {
        use std::io::Write;
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let meta_bytes = postcard::to_stdvec(meta).map_err(std::io::Error::other)?;
        let meta_len = u32::try_from(meta_bytes.len()).map_err(std::io::Error::other)?;
        let tmp = self
            .path
            .with_extension(format!("{tag}-{}", std::process::id()));
        let mut file = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        file.write_all(&meta_len.to_be_bytes())?;
        file.write_all(&meta_bytes)?;
        Ok((tmp, file))
    }

    /// Makes a temporary file durable.
    pub(crate) fn finish(&self, file: std::io::BufWriter<std::fs::File>) -> std::io::Result<()> {
        file.into_inner().map_err(|e| e.into_error())?.sync_all()
    }

    /// Renames a finished temporary file into place, durably.
    pub(crate) fn commit(&self, tmp: &std::path::Path) -> std::io::Result<()> {
        std::fs::rename(tmp, &self.path)?;
        let dir = self.path.parent().unwrap_or(std::path::Path::new("."));
        std::fs::File::open(dir)?.sync_all()
    }

    /// The meta, and the file positioned at the start of the dump; `None` if there is no
    /// snapshot. Only the header is read.
    pub(crate) fn open(&self) -> std::io::Result<Option<(Meta, std::fs::File, u64)>> {
        let mut file = match std::fs::File::open(&self.path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let corrupt = || std::io::Error::other(format!("{} is corrupt", self.path.display()));
        let mut len = [0u8; 4];
        file.read_exact(&mut len).map_err(|_| corrupt())?;
        let meta_len = u32::from_be_bytes(len) as usize;
        let mut meta_bytes = vec![0; meta_len];
        file.read_exact(&mut meta_bytes).map_err(|_| corrupt())?;
        let meta: Meta = postcard::from_bytes(&meta_bytes).map_err(|_| corrupt())?;
        Ok(Some((meta, file, 4 + meta_len as u64)))
    }

    /// Where a snapshot being received from the leader is written.
    pub(crate) fn receiving_path(&self) -> std::path::PathBuf {
        self.path.with_extension("receiving")
    }
}

/// Snapshot data as openraft reads, writes and sends it: a file, from `base` on. A snapshot
/// file's dump follows its header, so the same file serves openraft (which sees offset 0 at the
/// dump's start) without copying it; a snapshot being received is a plain file. Sending reads
/// one chunk at a time and receiving writes chunks to disk, so neither holds the whole
/// snapshot in memory.
pub struct SnapshotData {
    file: tokio::fs::File,
    base: u64,
}

impl SnapshotData {
    pub(crate) fn new(file: std::fs::File, base: u64) -> Self {
        Self {
            file: tokio::fs::File::from_std(file),
            base,
        }
    }

    /// The file positioned at the start of the data.
    pub(crate) async fn into_std(self) -> std::io::Result<(std::fs::File, u64)> {
        let mut file = self.file.into_std().await;
        file.seek(SeekFrom::Start(self.base))?;
        Ok((file, self.base))
    }
}

impl tokio::io::AsyncRead for SnapshotData {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.file).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for SnapshotData {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.file).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.file).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.file).poll_shutdown(cx)
    }
}

impl tokio::io::AsyncSeek for SnapshotData {
    fn start_seek(mut self: Pin<&mut Self>, position: SeekFrom) -> std::io::Result<()> {
        let position = match position {
            SeekFrom::Start(offset) => SeekFrom::Start(self.base + offset),
            relative => relative,
        };
        Pin::new(&mut self.file).start_seek(position)
    }

    fn poll_complete(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<u64>> {
        let base = self.base;
        Pin::new(&mut self.file)
            .poll_complete(cx)
            .map_ok(|position| position.saturating_sub(base))
    }
}
