//! A shard's state-machine key range as bytes: what a Raft snapshot carries to a lagging
//! follower. Records are `(column family, key, value)`, length-prefixed.

use crate::db::{Cf, Db};
use crate::error::{StorageError, StorageResult};
use crate::keys::{self, ShardId};

/// Dumps every state family's range of `shard` from one consistent RocksDB snapshot.
pub fn dump_shard(db: &Db, shard: ShardId) -> StorageResult<Vec<u8>> {
    dump_shard_to(db, shard, 0, |_| Ok(Vec::new()))
}

/// Streams every state family's range of `shard`, from one consistent RocksDB snapshot, into
/// the writer `start` returns. `start` first gets the `shard_meta` value of `meta_kind` as of
/// that same snapshot (so a header written from it agrees with the records that follow).
pub fn dump_shard_to<W: std::io::Write>(
    db: &Db,
    shard: ShardId,
    meta_kind: u8,
    start: impl FnOnce(Option<Vec<u8>>) -> std::io::Result<W>,
) -> StorageResult<W> {
    let snapshot = db.rocks().snapshot();
    let prefix = keys::shard_prefix(shard);
    let meta = snapshot.get_cf(db.cf(Cf::ShardMeta), keys::shard_meta(shard, meta_kind))?;
    let mut out = start(meta)?;
    for (i, cf) in Cf::STATE.iter().enumerate() {
        let mut opts = rocksdb::ReadOptions::default();
        opts.set_snapshot(&snapshot);
        // Every key of the shard, not only those of the seek key's prefix (`history`).
        opts.set_total_order_seek(true);
        let mut iter = db.rocks().raw_iterator_cf_opt(db.cf(*cf), opts);
        iter.seek(&prefix);
        while let (Some(k), Some(v)) = (iter.key(), iter.value()) {
            if !k.starts_with(&prefix) {
                break;
            }
            out.write_all(&[i as u8])?;
            out.write_all(&(k.len() as u32).to_be_bytes())?;
            out.write_all(k)?;
            out.write_all(&(v.len() as u32).to_be_bytes())?;
            out.write_all(v)?;
            iter.next();
        }
        iter.status()?;
    }
    Ok(out)
}

/// Replaces `shard`'s state with the dumped records, atomically.
pub fn load_shard(db: &Db, shard: ShardId, data: &[u8]) -> StorageResult<()> {
    load_shard_from(db, shard, data, &[])
}

/// Replaces `shard`'s state with the dumped records read from `reader` (a snapshot file), in one
/// atomic write. The records are read as they are added, so the dump itself is never held in
/// memory besides RocksDB's write batch. `meta` (`shard_meta` kind, value) is written in the same
/// batch after the records, replacing what the dump carried for those kinds: the installer's
/// own applied record and counters land together with the state or not at all.
pub fn load_shard_from(
    db: &Db,
    shard: ShardId,
    reader: impl std::io::Read,
    meta: &[(u8, Vec<u8>)],
) -> StorageResult<()> {
    let prefix = keys::shard_prefix(shard);
    let end = keys::prefix_end(&prefix);
    let mut batch = rocksdb::WriteBatch::default();
    for cf in Cf::STATE {
        batch.delete_range_cf(db.cf(cf), &prefix, &end);
    }
    let mut reader = std::io::BufReader::new(reader);
    // A record starts with its family's index; the data may end only there.
    while let Some(cf_index) = next_byte(&mut reader)? {
        let cf = *Cf::STATE
            .get(usize::from(cf_index))
            .ok_or_else(|| corrupt("unknown column family"))?;
        let klen = read_u32(&mut reader)?;
        let key = read_vec(&mut reader, klen)?;
        let vlen = read_u32(&mut reader)?;
        let value = read_vec(&mut reader, vlen)?;
        if !key.starts_with(&prefix) {
            return Err(corrupt("key outside the shard"));
        }
        batch.put_cf(db.cf(cf), key, value);
    }
    for (kind, value) in meta {
        batch.put_cf(db.cf(Cf::ShardMeta), keys::shard_meta(shard, *kind), value);
    }
    db.rocks().write_opt(batch, &db.log_write_options())?;
    Ok(())
}

fn corrupt(reason: &str) -> StorageError {
    StorageError::Corrupt {
        cf: "snapshot",
        reason: reason.into(),
    }
}

fn next_byte(reader: &mut impl std::io::Read) -> StorageResult<Option<u8>> {
    let mut byte = [0u8; 1];
    loop {
        match reader.read(&mut byte) {
            Ok(0) => return Ok(None),
            Ok(_) => return Ok(Some(byte[0])),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(StorageError::Io(e)),
        }
    }
}

fn read_vec(reader: &mut impl std::io::Read, len: u32) -> StorageResult<Vec<u8>> {
    // A corrupt length must not turn into a huge allocation (RocksDB keys and Chronicle's
    // values are far below this).
    if len > 256 * 1024 * 1024 {
        return Err(corrupt("record too large"));
    }
    let mut buf = vec![0; len as usize];
    reader.read_exact(&mut buf).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            corrupt("truncated record")
        } else {
            StorageError::Io(e)
        }
    })?;
    Ok(buf)
}

fn read_u32(reader: &mut impl std::io::Read) -> StorageResult<u32> {
    let bytes = read_vec(reader, 4)?;
    Ok(u32::from_be_bytes(
        bytes.try_into().map_err(|_| corrupt("truncated record"))?,
    ))
}

/// The `shard_meta` value of `kind` recorded in a dump, if any.
pub fn meta_in_dump(data: &[u8], shard: ShardId, kind: u8) -> StorageResult<Option<Vec<u8>>> {
    let wanted_cf = Cf::STATE.iter().position(|c| *c == Cf::ShardMeta);
    let wanted_key = keys::shard_meta(shard, kind);
    let corrupt = || StorageError::Corrupt {
        cf: "snapshot",
        reason: "truncated record".into(),
    };
    let mut rest = data;
    let take = |rest: &mut &[u8], n: usize| -> StorageResult<Vec<u8>> {
        if rest.len() < n {
            return Err(corrupt());
        }
        let (head, tail) = rest.split_at(n);
        *rest = tail;
        Ok(head.to_vec())
    };
    while !rest.is_empty() {
        let cf = usize::from(take(&mut rest, 1)?[0]);
        let klen =
            u32::from_be_bytes(take(&mut rest, 4)?.try_into().map_err(|_| corrupt())?) as usize;
        let key = take(&mut rest, klen)?;
        let vlen =
            u32::from_be_bytes(take(&mut rest, 4)?.try_into().map_err(|_| corrupt())?) as usize;
        let value = take(&mut rest, vlen)?;
        if Some(cf) == wanted_cf && key == wanted_key {
            return Ok(Some(value));
        }
    }
    Ok(None)
}
