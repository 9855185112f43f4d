//! The POS idempotency index (docs/pos.md, "Exactly once"): which transactions were stored
//! within the window, and with what content.
//!
//! Looked up for every transaction of every input, so it lives in RAM: 64-bit digests of the
//! idempotency key (`register ␟ business day ␟ transaction id`), each with the first 32 bits
//! of the content digest and the second it was stored, 16 bytes per transaction (a
//! 200,000-transaction bulk upload holds 4.5 MB of table instead of 6.5 MB), in 64 shards
//! so that growing it never holds two copies of the whole table. On disk it is one record
//! per stored input in a side tree of the spool's database, 12 bytes per transaction (key
//! digest, content digest's first 4 bytes), written in the same sled transaction as the
//! input's events (so one cannot exist without the other) and read back into RAM at start. A
//! 64-bit key digest that collides with another transaction's (about 1 in 10^14 per
//! transaction at 200,000 entries) is answered as a conflict (409), not dropped: both digests
//! would have to collide for a transaction to pass as a duplicate. A retry of a stored transaction with changed content (a conflict) passes
//! as a duplicate only if its content digest agrees in 32 bits, once in 4 billion conflicts.
//!
//! Records written before 2026-12-04 hold 16 bytes per transaction (the whole 64-bit content
//! digest) under a key without the size byte; they are read alike. Releases before the
//! records kept one sled entry per transaction under the key as text (`pos_idempotency`);
//! those entries are read into a second map and honoured until they expire, and the old tree
//! is dropped once empty.

use sha2::Digest;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// The records' side tree.
pub const TREE: &str = "pos_seen";
/// The tree of releases that kept one entry per transaction.
pub const LEGACY_TREE: &str = "pos_idempotency";

/// Bytes of one transaction in a record: the key digest and the first 4 bytes of the content
/// digest (what the RAM index compares). A record's key ends with this size.
const ENTRY: u8 = 12;
/// Bytes of one transaction in the records of releases before 2026-12-04 (the whole 64-bit
/// content digest), whose keys had no size byte.
const ENTRY_BEFORE: usize = 16;

/// The digest of an idempotency key. The keys are not secret (register, day, id), so a plain
/// hash serves, and it stays the same across restarts and releases.
pub fn key_digest(key: &str) -> u64 {
    first_u64(&sha2::Sha256::digest(key.as_bytes()))
}

/// The first 8 bytes of a SHA-256, as a number.
pub fn first_u64(h: &[u8]) -> u64 {
    be_u64(h).unwrap_or(0)
}

/// The map's keys are already uniform digests: hashing them again would only cost time.
#[derive(Default)]
pub struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

type DigestMap<V> = HashMap<u64, V, BuildHasherDefault<DigestHasher>>;

/// What the index says about one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// Not stored within the window.
    New,
    /// Stored with this content digest (its first 32 bits, [`short`]).
    Stored(u32),
    /// Stored by an earlier release: the first 8 bytes of its content hash (computed the old
    /// way, see `Normalized::legacy_content`), or `None` for entries written before hashes.
    Legacy(Option<u64>),
}

/// The RAM side of the index.
#[derive(Default)]
pub struct Seen {
    map: Shards,
    legacy: DigestMap<(Option<u64>, i64)>,
}

/// Shards of the RAM index. A hash table grows by allocating one twice its size and moving
/// every entry, so one table of 200,000 entries held 6.7 MB for a moment to keep 4.5 MB; 64
/// shards grow one at a time, each by 1/64 of that.
struct Shards(Vec<DigestMap<Entry>>);

const SHARDS: usize = 64;

impl Default for Shards {
    fn default() -> Shards {
        Shards((0..SHARDS).map(|_| DigestMap::default()).collect())
    }
}

impl Shards {
    /// The shard of a key digest: bits 32-37, which the table uses neither to place an entry
    /// (the low bits) nor to tag it (the top 7), so every shard spreads as a whole table would.
    fn of(&self, key: u64) -> usize {
        ((key >> 32) as usize) % SHARDS
    }

    fn get(&self, key: &u64) -> Option<&Entry> {
        self.0.get(self.of(*key)).and_then(|m| m.get(key))
    }

    fn insert(&mut self, key: u64, e: Entry) {
        let i = self.of(key);
        if let Some(m) = self.0.get_mut(i) {
            m.insert(key, e);
        }
    }

    fn len(&self) -> usize {
        self.0.iter().map(HashMap::len).sum()
    }

    fn retain(&mut self, mut keep: impl FnMut(&Entry) -> bool) {
        for m in &mut self.0 {
            m.retain(|_, e| keep(e));
        }
    }

    fn shrink_to_fit(&mut self) {
        for m in &mut self.0 {
            m.shrink_to_fit();
        }
    }
}

/// One transaction in RAM: the first 32 bits of its content digest and the Unix second it
/// was stored (a `u32` reaches 2106).
#[derive(Clone, Copy)]
struct Entry {
    content: u32,
    at_s: u32,
}

impl Entry {
    fn new(content: u64, at_ms: i64) -> Entry {
        Entry {
            content: short(content),
            at_s: u32::try_from(at_ms.div_euclid(1000)).unwrap_or(if at_ms < 0 {
                0
            } else {
                u32::MAX
            }),
        }
    }

    fn at_ms(&self) -> i64 {
        i64::from(self.at_s) * 1000
    }
}

/// The part of a content digest the RAM index keeps (what [`Found::Stored`] holds).
pub fn short(content: u64) -> u32 {
    (content >> 32) as u32
}

/// A record's key: the time it was stored, then the key digest of its input's first
/// transaction (unique within the window, and in time order so expiry reads from the front),
/// then the size of one entry of its value ([`ENTRY`]).
pub fn record_key(at_ms: i64, first_key: u64) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[..8].copy_from_slice(&at_ms.to_be_bytes());
    k[8..16].copy_from_slice(&first_key.to_be_bytes());
    k[16] = ENTRY;
    k
}

/// A record's value: the key digest and the content digest's first 4 bytes of every
/// transaction of the input.
pub fn record_value(entries: &[(u64, u64)]) -> Vec<u8> {
    let mut v = Vec::with_capacity(entries.len() * usize::from(ENTRY));
    for (k, c) in entries {
        v.extend_from_slice(&k.to_be_bytes());
        v.extend_from_slice(&short(*c).to_be_bytes());
    }
    v
}

/// The (key digest, content digest) pairs of a record, by the entry size its key gives; a torn
/// tail and records of an unknown size are skipped. The content digest comes back as its
/// first 32 bits in the high half, what [`short`] takes.
fn record_entries<'a>(key: &[u8], value: &'a [u8]) -> impl Iterator<Item = (u64, u64)> + 'a {
    let size = match key.get(16) {
        None if key.len() == 16 => ENTRY_BEFORE,
        Some(&ENTRY) if key.len() == 17 => usize::from(ENTRY),
        _ => 0,
    };
    let entries = match size {
        0 => [].chunks_exact(1),
        _ => value.chunks_exact(size),
    };
    entries.filter_map(move |e| {
        let key = be_u64(e)?;
        let content = match size {
            ENTRY_BEFORE => be_u64(e.get(8..)?)?,
            _ => u64::from(u32::from_be_bytes(e.get(8..12)?.try_into().ok()?)) << 32,
        };
        Some((key, content))
    })
}

fn be_i64(b: &[u8]) -> Option<i64> {
    b.get(..8)
        .and_then(|x| <[u8; 8]>::try_from(x).ok())
        .map(i64::from_be_bytes)
}

fn be_u64(b: &[u8]) -> Option<u64> {
    b.get(..8)
        .and_then(|x| <[u8; 8]>::try_from(x).ok())
        .map(u64::from_be_bytes)
}

impl Seen {
    /// Reads the records (and an earlier release's entries) stored within the window. Expired
    /// ones are left for [`Seen::expire`].
    pub fn load(tree: &sled::Tree, legacy: Option<&sled::Tree>, now: i64, window_ms: i64) -> Seen {
        let mut s = Seen::default();
        let from = now.saturating_sub(window_ms);
        for (k, v) in tree.iter().flatten() {
            let Some(at) = be_i64(&k) else { continue };
            if at <= from {
                continue;
            }
            for (key, content) in record_entries(&k, &v) {
                s.map.insert(key, Entry::new(content, at));
            }
        }
        if let Some(old) = legacy {
            for (k, v) in old.iter().flatten() {
                let at = be_i64(&v).unwrap_or(0);
                if at <= from {
                    continue;
                }
                let content = v.get(8..40).map(first_u64);
                let key = std::str::from_utf8(&k).map(key_digest).unwrap_or(0);
                s.legacy.insert(key, (content, at));
            }
        }
        s
    }

    /// What is known about `key` (a [`key_digest`]) within the window.
    pub fn find(&self, key: u64, now: i64, window_ms: i64) -> Found {
        let live = |at: i64| now.saturating_sub(at) < window_ms;
        match self.map.get(&key) {
            Some(e) if live(e.at_ms()) => Found::Stored(e.content),
            _ => match self.legacy.get(&key) {
                Some((content, at)) if live(*at) => Found::Legacy(*content),
                _ => Found::New,
            },
        }
    }

    /// Remembers stored transactions (after their record was appended).
    pub fn insert(&mut self, entries: &[(u64, u64)], at: i64) {
        for (k, c) in entries {
            self.map.insert(*k, Entry::new(*c, at));
        }
    }

    /// Transactions remembered (both maps).
    pub fn len(&self) -> usize {
        self.map.len() + self.legacy.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets what is older than the window, in RAM and on disk; returns how many
    /// transactions were forgotten. The legacy tree is emptied entry by entry.
    pub fn expire(
        &mut self,
        tree: &sled::Tree,
        legacy: Option<&sled::Tree>,
        now: i64,
        window_ms: i64,
    ) -> Result<usize, sled::Error> {
        let from = now.saturating_sub(window_ms);
        let before = self.len();
        self.map.retain(|e| e.at_ms() > from);
        self.legacy.retain(|_, (_, at)| *at > from);
        // Every record stored at `from` or before sorts below this prefix of a key. A window
        // reaching before 1970 expires nothing: a negative time would sort above every other.
        if from >= 0 {
            let end = from.saturating_add(1).to_be_bytes();
            let old: Vec<sled::IVec> = tree
                .range(..end.as_slice())
                .keys()
                .collect::<Result<_, _>>()?;
            for k in old {
                tree.remove(k)?;
            }
        }
        if let Some(l) = legacy {
            for (k, v) in l.iter().flatten() {
                if be_i64(&v).unwrap_or(0) <= from {
                    l.remove(k)?;
                }
            }
        }
        let removed = before - self.len();
        if removed > 0 {
            self.map.shrink_to_fit();
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;

    /// A fresh sled database in a temporary directory (kept while the test runs) and its
    /// records tree.
    fn records() -> Result<(tempfile::TempDir, sled::Db, sled::Tree), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let db = sled::Config::new().path(dir.path()).open()?;
        let tree = db.open_tree(TREE)?;
        Ok((dir, db, tree))
    }

    #[test]
    fn records_round_trip_through_sled_and_expire() -> Result<(), Box<dyn std::error::Error>> {
        let (_dir, _db, tree) = records()?;
        let now = 100 * DAY;
        let a = (key_digest("R1\u{1f}2026-12-01\u{1f}T1"), 11 << 32);
        let b = (key_digest("R1\u{1f}2026-12-01\u{1f}T2"), 22 << 32);
        tree.insert(record_key(now - 40 * DAY, 1), record_value(&[a]))?;
        tree.insert(record_key(now - DAY, 2), record_value(&[b]))?;
        let mut s = Seen::load(&tree, None, now, 30 * DAY);
        assert_eq!(s.find(a.0, now, 30 * DAY), Found::New, "expired");
        assert_eq!(s.find(b.0, now, 30 * DAY), Found::Stored(22));
        assert_eq!(s.expire(&tree, None, now, 30 * DAY)?, 0);
        assert_eq!(tree.len(), 1, "the expired record is deleted");
        s.insert(&[a], now);
        assert_eq!(s.find(a.0, now, 30 * DAY), Found::Stored(11));
        assert_eq!(s.expire(&tree, None, now + 31 * DAY, 30 * DAY)?, 2);
        assert!(s.is_empty());
        assert_eq!(tree.len(), 0);
        Ok(())
    }

    #[test]
    fn earlier_release_entries_are_honoured_until_they_expire(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let (_dir, db, tree) = records()?;
        let old = db.open_tree(LEGACY_TREE)?;
        let now = 100 * DAY;
        let mut v = (now - DAY).to_be_bytes().to_vec();
        v.extend_from_slice(&[7u8; 32]);
        old.insert("R1\u{1f}2026-12-01\u{1f}T9", v)?;
        old.insert("R1\u{1f}\u{1f}T8", (now - DAY).to_be_bytes().to_vec())?;
        let mut s = Seen::load(&tree, Some(&old), now, 30 * DAY);
        assert_eq!(
            s.find(key_digest("R1\u{1f}2026-12-01\u{1f}T9"), now, 30 * DAY),
            Found::Legacy(Some(first_u64(&[7u8; 32])))
        );
        assert_eq!(
            s.find(key_digest("R1\u{1f}\u{1f}T8"), now, 30 * DAY),
            Found::Legacy(None)
        );
        assert_eq!(s.expire(&tree, Some(&old), now + 30 * DAY, 30 * DAY)?, 2);
        assert_eq!(old.len(), 0);
        Ok(())
    }

    #[test]
    fn the_shards_share_the_keys_and_find_each() {
        let mut s = Seen::default();
        let keys: Vec<(u64, u64)> = (0..20_000)
            .map(|i| {
                (
                    key_digest(&format!("R1\u{1f}2026-12-01\u{1f}T{i}")),
                    i << 32,
                )
            })
            .collect();
        s.insert(&keys, DAY);
        assert_eq!(s.len(), keys.len());
        for (k, c) in &keys {
            assert_eq!(s.find(*k, DAY, DAY), Found::Stored(short(*c)));
        }
        let most = s.map.0.iter().map(HashMap::len).max().unwrap_or(0);
        assert!(most < 3 * keys.len() / SHARDS, "one shard holds {most}");
    }

    #[test]
    fn damaged_records_are_skipped() -> Result<(), Box<dyn std::error::Error>> {
        let (_dir, _db, tree) = records()?;
        tree.insert(b"short", b"x".to_vec())?;
        tree.insert(record_key(DAY, 1), vec![1u8; 20])?;
        let mut unknown = record_key(DAY, 2).to_vec();
        unknown[16] = 13;
        tree.insert(unknown, vec![2u8; 26])?;
        let s = Seen::load(&tree, None, DAY, DAY);
        assert_eq!(
            s.len(),
            1,
            "the whole entry is read, the torn tail and the unknown size skipped"
        );
        Ok(())
    }

    #[test]
    fn records_of_the_release_before_are_read() -> Result<(), Box<dyn std::error::Error>> {
        let (_dir, _db, tree) = records()?;
        let now = 100 * DAY;
        let (a, b) = (
            key_digest("R1\u{1f}d\u{1f}T1"),
            key_digest("R1\u{1f}d\u{1f}T2"),
        );
        // Then a record's key was the time and the first key digest, its entries 16 bytes.
        let mut key = (now - DAY).to_be_bytes().to_vec();
        key.extend_from_slice(&a.to_be_bytes());
        let mut value = a.to_be_bytes().to_vec();
        value.extend_from_slice(&(7u64 << 32 | 5).to_be_bytes());
        value.extend_from_slice(&b.to_be_bytes());
        value.extend_from_slice(&(9u64 << 32).to_be_bytes());
        tree.insert(key, value)?;
        let c = key_digest("R1\u{1f}d\u{1f}T3");
        tree.insert(
            record_key(now - 2 * DAY, b),
            record_value(&[(b, 8 << 32 | 1), (c, 6 << 32 | 2)]),
        )?;
        let mut s = Seen::load(&tree, None, now, 30 * DAY);
        assert_eq!(s.find(a, now, 30 * DAY), Found::Stored(7));
        assert_eq!(
            s.find(b, now, 30 * DAY),
            Found::Stored(9),
            "the later record wins"
        );
        assert_eq!(s.find(c, now, 30 * DAY), Found::Stored(6));
        assert_eq!(s.expire(&tree, None, now + 28 * DAY, 30 * DAY)?, 1);
        assert_eq!(
            tree.len(),
            1,
            "the record stored first (the newer format) expired first"
        );
        assert_eq!(s.find(c, now + 28 * DAY, 30 * DAY), Found::New);
        assert_eq!(s.expire(&tree, None, now + 29 * DAY - 1, 30 * DAY)?, 0);
        assert_eq!(
            tree.len(),
            1,
            "the older format's record is kept until its time"
        );
        assert_eq!(s.expire(&tree, None, now + 29 * DAY, 30 * DAY)?, 2);
        assert_eq!(tree.len(), 0);
        Ok(())
    }

    #[test]
    fn a_window_reaching_before_1970_expires_nothing() -> Result<(), Box<dyn std::error::Error>> {
        let (_dir, _db, tree) = records()?;
        let a = (key_digest("T1"), 1 << 32);
        tree.insert(record_key(DAY, a.0), record_value(&[a]))?;
        let mut s = Seen::load(&tree, None, 2 * DAY, 100 * 365 * DAY);
        assert_eq!(s.expire(&tree, None, 2 * DAY, 100 * 365 * DAY)?, 0);
        assert_eq!((tree.len(), s.len()), (1, 1));
        Ok(())
    }

    #[test]
    fn a_key_stored_again_replaces_its_entry() {
        let mut s = Seen::default();
        let keys: Vec<(u64, u64)> = (0..5_000u64)
            .map(|i| (key_digest(&format!("T{i}")), i << 32))
            .collect();
        s.insert(&keys, DAY);
        let again: Vec<(u64, u64)> = keys
            .iter()
            .step_by(7)
            .map(|(k, c)| (*k, c + (1 << 32)))
            .collect();
        s.insert(&again, 2 * DAY);
        assert_eq!(s.len(), keys.len());
        for (k, c) in &again {
            assert_eq!(s.find(*k, 2 * DAY, DAY), Found::Stored(short(*c)));
        }
        assert_eq!(
            s.find(keys[1].0, 2 * DAY, DAY),
            Found::New,
            "expired at two days"
        );
    }
}
