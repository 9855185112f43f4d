//! Device estimation: groups the probe requests of randomized (locally administered) addresses
//! into device *tracks*, so footfall counts phones rather than addresses (docs/wifi.md, "Device
//! estimation").
//!
//! What links two addresses to one track, strongest first:
//! 1. the same address (an address belongs to one transmitter);
//! 2. 802.11 sequence-number continuity under the same fingerprint (devices that keep their
//!    sequence counter across address changes);
//! 3. the same information-element fingerprint ([`ProbeKeys::fingerprint`]) while the track is alive: a
//!    new address joins the live track of that fingerprint seen most recently.
//!
//! What splits: two addresses of one track that transmit *interleaved* within one burst
//! belong to two devices (one phone uses one address at a time), so the newer address moves to
//! a track of its own. Globally unique addresses are their own device and never link.
//!
//! What joins two live tracks: their *bursts coincide*. A phone scans at moments of its own;
//! two phones do not keep scanning within the same second. A randomized track whose bursts
//! have mostly (two in three, at least [`TWIN_MIN_SHARED`]) fallen within a burst of one other
//! randomized track, which over the same time has mostly burst with it too, is a
//! second track of the same phone (a second fingerprint, or a split of a phone that does use
//! several addresses at once) and is folded into the older one ([`Placement::Merged`]); the
//! phone then keeps its other fingerprint and no longer splits.
//!
//! How long a silent track lives follows its own rhythm: a phone whose screen is off probes
//! every few minutes, so a track is kept for [`RHYTHM_FACTOR`] times its usual interval between
//! bursts when that is longer than `expire_ms` (at most [`MAX_SILENCE_FACTOR`] times
//! `expire_ms`); [`Estimator::silence_ms`] tells the visits the same.
//!
//! Everything here lives in RAM only, keyed by per-epoch keyed hashes (never a raw MAC; made by
//! [`crate::privacy::wifi`]), and is forgotten when a track has been silent for `expire_ms` (up
//! to [`MAX_SILENCE_FACTOR`] times that for a slow rhythm) and at every key rotation.
//!
//! [`ProbeKeys::fingerprint`]: crate::privacy::wifi::ProbeKeys::fingerprint

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Hasher for maps keyed by values that are already keyed hashes (addresses, fingerprints) or
/// track numbers: one multiply spreads the bits. Keyed-hash inputs cannot be steered by a
/// sender without the key, so a second keyed hash would only cost time on every frame.
#[derive(Default, Clone, Copy)]
pub struct U64Hasher(u64);

impl Hasher for U64Hasher {
    fn finish(&self) -> u64 {
        self.0.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(26)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ b as u64;
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 ^= v;
    }
}

/// A map keyed by a keyed hash or a track number.
pub type U64Map<V> = HashMap<u64, V, BuildHasherDefault<U64Hasher>>;

/// One accepted probe request as the estimator sees it: keyed hashes, not identifiers.
#[derive(Debug, Clone, Copy)]
pub struct Probe {
    /// Event time in Unix milliseconds: receipt time live, the capture timestamp in replay.
    pub ts_ms: i64,
    /// Keyed hash of the source address.
    pub addr: u64,
    /// Locally administered source address (randomized): eligible for linking.
    pub randomized: bool,
    /// [`ProbeKeys::fingerprint`](crate::privacy::wifi::ProbeKeys::fingerprint) of the
    /// elements.
    pub fingerprint: u64,
    /// 802.11 sequence number.
    pub seq: u16,
}

/// How a probe was placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// The address already belongs to the track.
    Known,
    /// A new address linked to a live track (fingerprint, sequence number).
    Linked,
    /// A new track for a new address.
    New,
    /// A new track for an address that was linked wrongly (interleaved transmissions).
    Split,
    /// No room for a new track (`max_tracks`): counted by address only.
    Untracked,
    /// The probe's track turned out to be a second track of the phone of the returned track
    /// (their bursts coincide): the track with this id was folded into the returned one.
    Merged(u64),
}

/// Tuning of the estimator (docs/wifi.md lists the reasons for each value).
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Link randomized addresses at all; `false` makes every address its own track.
    pub link: bool,
    /// A track silent this long is forgotten (`session_gap`).
    pub expire_ms: i64,
    /// Frames of one device within this span belong to one burst (scan).
    pub burst_ms: i64,
    /// Tracks held at once (`max_tracked_devices`).
    pub max_tracks: usize,
}

impl Settings {
    /// Settings for a source configuration.
    pub fn from_config(cfg: &super::config::WifiConfig) -> Settings {
        Settings {
            link: cfg.estimate_devices,
            expire_ms: (cfg.session_gap.0.as_millis() as i64).max(1),
            burst_ms: 1000,
            max_tracks: cfg.max_tracked_devices,
        }
    }
}

/// Largest forward step of a sequence counter still read as "the same counter", per second
/// elapsed (a phone sends a few frames a second at most while scanning) plus a margin.
const SEQ_STEP_PER_S: i64 = 16;
const SEQ_STEP_MARGIN: i64 = 64;

/// Bursts of a track that must have coincided with one other track before the two are one
/// phone: by chance, a burst of one phone falls within a second of a given other phone's burst
/// about once in twenty to forty scans, so four in a row, or two in three of a longer track,
/// practically never happens between two phones.
pub const TWIN_MIN_SHARED: u32 = 4;

/// Intervals between bursts a track may stay silent before it is gone, once its rhythm is
/// known (three bursts): a phone that missed three of its usual scans has left.
pub const RHYTHM_FACTOR: i64 = 3;

/// Longest silence, in multiples of `expire_ms`, that a slow rhythm can earn a track.
pub const MAX_SILENCE_FACTOR: i64 = 3;

/// Burst starts remembered for finding coinciding bursts (those of the last `burst_ms`); more
/// at once (a crowd) only drops the oldest.
const RECENT_BURSTS: usize = 256;

struct Track {
    id: u64,
    fingerprint: u64,
    randomized: bool,
    last_ms: i64,
    last_seq: u16,
    /// The address in use now, its first and last frame, and whether it was linked (not the
    /// first of the track).
    cur_addr: u64,
    cur_first_ms: i64,
    cur_last_ms: i64,
    cur_linked: bool,
    /// The address used before it, and its last frame.
    prev_addr: u64,
    prev_last_ms: i64,
    /// The most recent addresses (at most [`ADDRS_PER_TRACK`]); older ones are forgotten.
    addrs: RecentAddrs,
    /// The phone's other fingerprint, learned when a second track of it was folded in (0: none).
    alt_fingerprint: u64,
    /// The phone sends from several addresses within one burst (learned by a fold): the
    /// interleaving rule does not split it.
    multi_addr: bool,
    /// Start of the current burst, bursts so far, and the smoothed interval between burst
    /// starts (ms; 0 until the second burst).
    burst_at: i64,
    bursts: u32,
    interval_ms: i64,
    /// The track whose bursts this one's coincided with, how many of them did (each of this
    /// track's bursts counts once: `credited_at`), and the partner's burst count before the
    /// first coincidence (so its bursts since can be compared too).
    twin: u64,
    shared: u32,
    twin_base: u32,
    credited_at: i64,
}

impl Track {
    /// How long the track may stay silent before it is gone: `expire_ms`, or its own rhythm
    /// when that is slower (module doc).
    fn silence_ms(&self, expire_ms: i64) -> i64 {
        if self.bursts < 3 || self.interval_ms <= 0 {
            return expire_ms;
        }
        (RHYTHM_FACTOR * self.interval_ms).clamp(expire_ms, MAX_SILENCE_FACTOR * expire_ms)
    }

    /// Counts this track's current burst as coinciding with a burst of `other` (which has
    /// made `other_bursts` bursts); `twin_alive` tells whether the current partner still
    /// exists. A burst counts once, whatever else falls within its second.
    fn coincided(&mut self, other: u64, other_bursts: u32, twin_alive: bool) {
        if self.credited_at == self.burst_at {
            return;
        }
        if self.twin == other {
            self.shared += 1;
        } else if self.shared < 2 || !twin_alive {
            // A first coincidence or two can be chance; a new partner replaces them.
            self.twin = other;
            self.shared = 1;
            self.twin_base = other_bursts.saturating_sub(1);
        } else {
            return;
        }
        self.credited_at = self.burst_at;
    }

    /// True when this track is a second track of `partner`'s phone: at least
    /// [`TWIN_MIN_SHARED`] of its bursts coincided with the partner's, and that is two in three
    /// of its own bursts and of the partner's bursts over the same time (a device that probes
    /// every second has a burst near everyone's, but most of its bursts meet nobody's).
    fn twin_of(&self, partner: &Track) -> bool {
        let partner_since = partner.bursts.saturating_sub(self.twin_base);
        self.twin == partner.id
            && self.shared >= TWIN_MIN_SHARED
            && 3 * self.shared >= 2 * self.bursts
            && 3 * self.shared >= 2 * partner_since
    }
}

/// The last [`ADDRS_PER_TRACK`] addresses of a track, oldest first, inside the track itself:
/// a new device costs no allocation of its own.
#[derive(Clone, Copy)]
struct RecentAddrs {
    addrs: [u64; ADDRS_PER_TRACK],
    len: usize,
}

impl RecentAddrs {
    fn one(addr: u64) -> RecentAddrs {
        let mut addrs = [0; ADDRS_PER_TRACK];
        addrs[0] = addr;
        RecentAddrs { addrs, len: 1 }
    }

    fn as_slice(&self) -> &[u64] {
        self.addrs.get(..self.len).unwrap_or(&self.addrs)
    }

    /// Appends `addr`; returns the oldest address when it had to make room.
    fn push(&mut self, addr: u64) -> Option<u64> {
        if let Some(slot) = self.addrs.get_mut(self.len) {
            *slot = addr;
            self.len += 1;
            return None;
        }
        let oldest = self.addrs[0];
        self.addrs.copy_within(1.., 0);
        self.addrs[ADDRS_PER_TRACK - 1] = addr;
        Some(oldest)
    }

    /// Forgets `addr`, keeping the order of the others.
    fn remove(&mut self, addr: u64) {
        let mut kept = 0;
        for i in 0..self.len {
            let a = self.addrs[i];
            if a != addr {
                self.addrs[kept] = a;
                kept += 1;
            }
        }
        self.len = kept;
    }
}

/// Addresses remembered per track. Randomizing phones never go back to an old address, so a
/// few cover the interleaving check and retransmissions, and a phone that probes all day
/// does not grow the heap.
const ADDRS_PER_TRACK: usize = 8;

/// Device tracks over a stream of probe requests (event time).
pub struct Estimator {
    set: Settings,
    next_id: u64,
    tracks: U64Map<Track>,
    by_addr: U64Map<u64>,
    by_fingerprint: U64Map<Vec<u64>>,
    /// Burst starts of the last `burst_ms` (time, track), oldest first.
    recent_bursts: std::collections::VecDeque<(i64, u64)>,
    last_sweep_ms: i64,
    /// Probes not tracked because `max_tracks` was reached.
    pub untracked: u64,
    /// Tracks created (new devices, splits included) since start.
    pub created: u64,
    /// Tracks folded into another of the same phone since start.
    pub merged: u64,
}

impl Estimator {
    /// An empty estimator.
    pub fn new(set: Settings) -> Estimator {
        Estimator {
            set,
            next_id: 1,
            tracks: U64Map::default(),
            by_addr: U64Map::default(),
            by_fingerprint: U64Map::default(),
            recent_bursts: std::collections::VecDeque::new(),
            last_sweep_ms: i64::MIN,
            untracked: 0,
            created: 0,
            merged: 0,
        }
    }

    /// New settings (SIGHUP); live tracks are kept.
    pub fn reconfigure(&mut self, set: Settings) {
        self.set = set;
    }

    /// Forgets every track (key rotation).
    pub fn clear(&mut self) {
        self.tracks.clear();
        self.by_addr.clear();
        self.by_fingerprint.clear();
        self.recent_bursts.clear();
    }

    /// How long `track` may stay silent before it is gone (`expire_ms`, or longer for a slow
    /// rhythm; module doc): the visits hold a session open as long.
    pub fn silence_ms(&self, track: u64) -> i64 {
        self.tracks
            .get(&track)
            .map_or(self.set.expire_ms, |t| t.silence_ms(self.set.expire_ms))
    }

    /// Tracks held now.
    pub fn len(&self) -> usize {
        self.tracks.len()
    }

    /// True when no track is held.
    pub fn is_empty(&self) -> bool {
        self.tracks.is_empty()
    }

    /// True when `addr` belongs to a track: the caller can skip computing the fingerprint,
    /// which only a new address needs.
    pub fn knows(&self, addr: u64) -> bool {
        self.by_addr.contains_key(&addr)
    }

    /// Places one probe; returns its track id (None when untracked) and how it was placed.
    pub fn observe(&mut self, p: Probe) -> (Option<u64>, Placement) {
        self.observe_with(p, || p.fingerprint)
    }

    /// [`Estimator::observe`] for a probe whose `fingerprint` is computed by `fingerprint`
    /// only when needed: for an address no live track holds. The address is looked up once
    /// (again only when the probe's sweep dropped tracks).
    pub fn observe_with(
        &mut self,
        p: Probe,
        fingerprint: impl FnOnce() -> u64,
    ) -> (Option<u64>, Placement) {
        let (track, placement) = self.place(p, fingerprint);
        match track.and_then(|id| self.burst(id, p.ts_ms).map(|m| (id, m))) {
            Some((_, (from, into))) => (Some(into), Placement::Merged(from)),
            None => (track, placement),
        }
    }

    /// Places a probe on a track (the rules of the module doc, before bursts are compared).
    fn place(
        &mut self,
        mut p: Probe,
        fingerprint: impl FnOnce() -> u64,
    ) -> (Option<u64>, Placement) {
        let held = self.by_addr.get(&p.addr).copied();
        let held = match self.sweep(p.ts_ms) {
            true => self.by_addr.get(&p.addr).copied(),
            false => held,
        };
        if let Some(id) = held {
            return self.known(id, p);
        }
        // After the sweep: an address whose track this very probe's sweep expired needs its
        // fingerprint as much as a never-seen one.
        p.fingerprint = fingerprint();
        if p.randomized && self.set.link {
            if let Some(id) = self.candidate(&p) {
                if let Some(t) = self.tracks.get_mut(&id) {
                    t.last_ms = t.last_ms.max(p.ts_ms);
                    t.last_seq = p.seq;
                    t.prev_addr = t.cur_addr;
                    t.prev_last_ms = t.cur_last_ms;
                    t.cur_addr = p.addr;
                    t.cur_first_ms = p.ts_ms;
                    t.cur_last_ms = p.ts_ms;
                    t.cur_linked = true;
                    if let Some(old) = t.addrs.push(p.addr) {
                        self.by_addr.remove(&old);
                    }
                    self.by_addr.insert(p.addr, id);
                    return (Some(id), Placement::Linked);
                }
            }
        }
        match self.create(p, p.ts_ms) {
            Some(id) => (Some(id), Placement::New),
            None => {
                self.untracked += 1;
                (None, Placement::Untracked)
            }
        }
    }

    /// A probe from an address the estimator knows.
    fn known(&mut self, id: u64, p: Probe) -> (Option<u64>, Placement) {
        let Some(t) = self.tracks.get_mut(&id) else {
            return (None, Placement::Untracked);
        };
        // Strictly in time order A … B … A: A's earlier frames all before B's first, this
        // frame after B's last. Captures merged from several receivers reorder frames by a
        // fraction of a second; that alone never splits.
        let interleaved = t.cur_linked
            && !t.multi_addr
            && p.addr == t.prev_addr
            && t.prev_last_ms < t.cur_first_ms
            && p.ts_ms > t.cur_last_ms
            && p.ts_ms - t.cur_first_ms <= self.set.burst_ms;
        if !interleaved {
            t.last_ms = t.last_ms.max(p.ts_ms);
            if t.cur_addr == p.addr {
                t.last_seq = p.seq;
                t.cur_last_ms = t.cur_last_ms.max(p.ts_ms);
            } else if t.prev_addr == p.addr {
                t.prev_last_ms = t.prev_last_ms.max(p.ts_ms);
            }
            return (Some(id), Placement::Known);
        }
        // This older address of the track transmits again after a newer one took over within
        // one burst: two devices. The newer address gets its own track.
        let moved = t.cur_addr;
        let moved_seq = t.last_seq;
        let since = t.cur_first_ms;
        t.addrs.remove(moved);
        t.cur_addr = p.addr;
        t.cur_first_ms = p.ts_ms;
        t.cur_last_ms = p.ts_ms;
        t.cur_linked = false;
        t.prev_addr = 0;
        t.prev_last_ms = i64::MIN;
        t.last_ms = t.last_ms.max(p.ts_ms);
        t.last_seq = p.seq;
        let fp_probe = Probe {
            addr: moved,
            seq: moved_seq,
            fingerprint: t.fingerprint,
            ..p
        };
        self.by_addr.remove(&moved);
        if self.create(fp_probe, since).is_some() {
            return (Some(id), Placement::Split);
        }
        (Some(id), Placement::Known)
    }

    /// The live track a new randomized address belongs to, if any.
    fn candidate(&self, p: &Probe) -> Option<u64> {
        let ids = self.by_fingerprint.get(&p.fingerprint)?;
        let mut best: Option<(bool, i64, u64)> = None;
        for &id in ids {
            let Some(t) = self.tracks.get(&id) else {
                continue;
            };
            let idle = p.ts_ms - t.last_ms;
            if !t.randomized || idle > t.silence_ms(self.set.expire_ms) {
                continue;
            }
            let step = (p.seq as i64 - t.last_seq as i64).rem_euclid(4096);
            let seq_ok = step > 0 && step <= SEQ_STEP_MARGIN + SEQ_STEP_PER_S * idle.max(0) / 1000;
            let key = (seq_ok, t.last_ms, id);
            if best.is_none_or(|b| key > b) {
                best = Some(key);
            }
        }
        best.map(|(_, _, id)| id)
    }

    fn create(&mut self, p: Probe, first_ms: i64) -> Option<u64> {
        if self.tracks.len() >= self.set.max_tracks {
            self.sweep_now(p.ts_ms);
            if self.tracks.len() >= self.set.max_tracks {
                return None;
            }
        }
        let id = self.next_id;
        self.next_id += 1;
        self.created += 1;
        self.tracks.insert(
            id,
            Track {
                id,
                fingerprint: p.fingerprint,
                randomized: p.randomized,
                last_ms: p.ts_ms,
                last_seq: p.seq,
                cur_addr: p.addr,
                cur_first_ms: first_ms,
                cur_last_ms: p.ts_ms,
                cur_linked: false,
                prev_addr: 0,
                prev_last_ms: i64::MIN,
                addrs: RecentAddrs::one(p.addr),
                alt_fingerprint: 0,
                multi_addr: false,
                burst_at: i64::MIN,
                bursts: 0,
                interval_ms: 0,
                twin: 0,
                shared: 0,
                twin_base: 0,
                credited_at: i64::MIN,
            },
        );
        self.by_addr.insert(p.addr, id);
        if p.randomized {
            self.by_fingerprint
                .entry(p.fingerprint)
                .or_default()
                .push(id);
        }
        Some(id)
    }

    /// Drops tracks silent longer than `expire_ms`, at most once a second of event time; true
    /// when it looked.
    fn sweep(&mut self, now_ms: i64) -> bool {
        let due = now_ms.saturating_sub(self.last_sweep_ms) >= 1000;
        if due {
            self.sweep_now(now_ms);
        }
        due
    }

    fn sweep_now(&mut self, now_ms: i64) {
        self.last_sweep_ms = now_ms;
        let expire = self.set.expire_ms;
        let gone: Vec<u64> = self
            .tracks
            .values()
            .filter(|t| now_ms - t.last_ms > t.silence_ms(expire))
            .map(|t| t.id)
            .collect();
        for id in gone {
            self.forget(id);
        }
    }

    /// Drops a track with its addresses and fingerprints; returns it.
    fn forget(&mut self, id: u64) -> Option<Track> {
        let t = self.tracks.remove(&id)?;
        for a in t.addrs.as_slice() {
            if self.by_addr.get(a) == Some(&id) {
                self.by_addr.remove(a);
            }
        }
        for fp in [t.fingerprint, t.alt_fingerprint] {
            if let Some(v) = self.by_fingerprint.get_mut(&fp) {
                v.retain(|x| *x != id);
                if v.is_empty() {
                    self.by_fingerprint.remove(&fp);
                }
            }
        }
        Some(t)
    }

    /// Notes a probe of track `id` at `ts_ms` in the track's rhythm and, when it starts a
    /// burst, compares it with the other tracks' bursts of the last `burst_ms`. Returns
    /// `(folded, kept)` when two tracks turned out to be one phone (module doc).
    fn burst(&mut self, id: u64, ts_ms: i64) -> Option<(u64, u64)> {
        let window = self.set.burst_ms;
        let t = self.tracks.get_mut(&id)?;
        // Frames of the current burst (or reordered by a fraction of a second) add nothing.
        if t.bursts > 0 && ts_ms - t.burst_at <= window {
            return None;
        }
        if t.bursts > 0 {
            let gap = ts_ms - t.burst_at;
            t.interval_ms = match t.interval_ms {
                0 => gap,
                i => (i + gap) / 2,
            };
        }
        t.burst_at = ts_ms;
        t.bursts = t.bursts.saturating_add(1);
        while self
            .recent_bursts
            .front()
            .is_some_and(|&(at, _)| ts_ms - at > window)
        {
            self.recent_bursts.pop_front();
        }
        // Only randomized tracks pair (a globally unique address is a device of its own,
        // module doc), and only when linking is on at all.
        let pairs = self.set.link && t.randomized;
        let other = self
            .recent_bursts
            .iter()
            .rev()
            .find(|&&(at, o)| {
                o != id
                    && (ts_ms - at).abs() <= window
                    && self.tracks.get(&o).is_some_and(|t| t.randomized)
            })
            .map(|&(_, o)| o);
        if self.recent_bursts.len() >= RECENT_BURSTS {
            self.recent_bursts.pop_front();
        }
        self.recent_bursts.push_back((ts_ms, id));
        let other = other.filter(|_| pairs)?;
        self.credit(id, other);
        self.credit(other, id);
        // The younger track (the higher id) is the second one of the phone.
        let (from, into) = if id > other { (id, other) } else { (other, id) };
        let twin = match (self.tracks.get(&from), self.tracks.get(&into)) {
            (Some(f), Some(i)) => f.twin_of(i),
            _ => false,
        };
        if !twin {
            return None;
        }
        self.fold(from, into).then_some((from, into))
    }

    /// Credits `id`'s current burst as coinciding with one of `other`'s.
    fn credit(&mut self, id: u64, other: u64) {
        let other_bursts = self.tracks.get(&other).map_or(0, |t| t.bursts);
        let twin = self.tracks.get(&id).map_or(0, |t| t.twin);
        let twin_alive = self.tracks.contains_key(&twin);
        if let Some(t) = self.tracks.get_mut(&id) {
            t.coincided(other, other_bursts, twin_alive);
        }
    }

    /// Folds track `from` into track `into` (one phone): its addresses, its fingerprint (when
    /// different, as the phone's other one) and its time; the phone no longer splits.
    fn fold(&mut self, from: u64, into: u64) -> bool {
        if !self.tracks.contains_key(&into) {
            return false;
        }
        let Some(f) = self.forget(from) else {
            return false;
        };
        let mut evicted = Vec::new();
        let mut alt = None;
        if let Some(t) = self.tracks.get_mut(&into) {
            for &a in f.addrs.as_slice() {
                evicted.extend(t.addrs.push(a));
            }
            t.last_ms = t.last_ms.max(f.last_ms);
            t.multi_addr = true;
            t.twin = 0;
            t.shared = 0;
            t.twin_base = 0;
            if f.fingerprint != t.fingerprint && t.alt_fingerprint == 0 && f.randomized {
                t.alt_fingerprint = f.fingerprint;
                alt = Some(f.fingerprint);
            }
        }
        for a in evicted {
            if self.by_addr.get(&a) == Some(&into) {
                self.by_addr.remove(&a);
            }
        }
        // The folded track's addresses that the kept one now remembers (its last few).
        if let Some(t) = self.tracks.get(&into) {
            for &a in f.addrs.as_slice() {
                if t.addrs.as_slice().contains(&a) {
                    self.by_addr.insert(a, into);
                }
            }
        }
        if let Some(fp) = alt {
            self.by_fingerprint.entry(fp).or_default().push(into);
        }
        for b in self.recent_bursts.iter_mut() {
            if b.1 == from {
                b.1 = into;
            }
        }
        self.merged += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn est() -> Estimator {
        Estimator::new(Settings {
            link: true,
            expire_ms: 300_000,
            burst_ms: 1000,
            max_tracks: 100,
        })
    }

    fn p(ts: i64, addr: u64, fp: u64, seq: u16) -> Probe {
        Probe {
            ts_ms: ts,
            addr,
            randomized: true,
            fingerprint: fp,
            seq,
        }
    }

    #[test]
    fn rotating_addresses_of_one_fingerprint_are_one_track() {
        let mut e = est();
        let (a, pl) = e.observe(p(0, 1, 7, 100));
        assert_eq!(pl, Placement::New);
        // A new random address every two frames, random sequence numbers (iOS, Android 13).
        for (i, ts) in [20, 40, 60_000, 60_020, 130_000].iter().enumerate() {
            let (b, pl) = e.observe(p(*ts, 10 + i as u64, 7, 3000 - i as u16 * 500));
            assert_eq!((b, pl), (a, Placement::Linked));
        }
        assert_eq!(e.created, 1);
    }

    #[test]
    fn other_fingerprints_and_global_addresses_are_other_devices() {
        let mut e = est();
        let (a, _) = e.observe(p(0, 1, 7, 1));
        let (b, pl) = e.observe(p(10, 2, 8, 2));
        assert_eq!(pl, Placement::New);
        assert_ne!(a, b);
        let g = Probe {
            randomized: false,
            ..p(20, 3, 7, 3)
        };
        let (c, pl) = e.observe(g);
        assert_eq!(pl, Placement::New);
        assert_ne!(c, a);
        // A global address is never a link target.
        let (d, pl) = e.observe(Probe {
            randomized: false,
            ..p(30, 4, 7, 4)
        });
        assert_eq!(pl, Placement::New);
        assert_ne!(d, c);
    }

    /// An address back after `expire_ms` of silence has its old track dropped by the sweep its
    /// own probe runs: the new track must carry the probe's real fingerprint, or the phone's
    /// next random address could not link to it.
    #[test]
    fn a_track_expired_by_its_own_probe_is_recreated_with_its_fingerprint() {
        let mut e = est();
        let fp_calls = std::cell::Cell::new(0);
        let (a, _) = e.observe(p(0, 1, 7, 100));
        let (b, pl) = e.observe_with(p(400_000, 1, 0, 101), || {
            fp_calls.set(fp_calls.get() + 1);
            7
        });
        assert_eq!(pl, Placement::New);
        assert_ne!(a, b);
        assert_eq!(
            fp_calls.get(),
            1,
            "the fingerprint is computed for the new track"
        );
        let (c, pl) = e.observe(p(400_050, 2, 7, 102));
        assert_eq!((c, pl), (b, Placement::Linked));
        // A known, live address does not pay for a fingerprint.
        e.observe_with(p(400_100, 2, 0, 103), || {
            fp_calls.set(fp_calls.get() + 1);
            7
        });
        assert_eq!(fp_calls.get(), 1);
    }

    #[test]
    fn sequence_continuity_picks_the_right_track() {
        let mut e = est();
        let (a, _) = e.observe(p(0, 1, 7, 100));
        // Interleaved start of a second device of the same fingerprint.
        let (b, _) = e.observe(p(10, 2, 7, 2000));
        let (_, pl) = e.observe(p(30, 1, 7, 101));
        assert_eq!(pl, Placement::Split);
        assert_ne!(e.by_addr.get(&2).copied(), a);
        let b2 = e.by_addr.get(&2).copied();
        assert!(b2.is_some());
        let _ = b;
        // Later, a new address whose counter continues device 2's counter joins device 2,
        // although device 1 was seen more recently.
        e.observe(p(40_000, 1, 7, 140));
        let (x, pl) = e.observe(p(40_500, 3, 7, 2010));
        assert_eq!((x, pl), (b2, Placement::Linked));
    }

    #[test]
    fn interleaved_addresses_split_into_two_devices() {
        let mut e = est();
        let (a, _) = e.observe(p(0, 1, 7, 500));
        let (_, pl) = e.observe(p(15, 2, 7, 3900));
        assert_eq!(pl, Placement::Linked);
        let (x, pl) = e.observe(p(25, 1, 7, 501));
        assert_eq!((x, pl), (a, Placement::Split));
        assert_eq!(e.len(), 2);
        assert_eq!(e.created, 2);
    }

    #[test]
    fn silent_tracks_expire_and_the_cap_holds() {
        let mut e = Estimator::new(Settings {
            link: true,
            expire_ms: 10_000,
            burst_ms: 1000,
            max_tracks: 3,
        });
        for i in 0..5u64 {
            e.observe(p(i as i64, i, 100 + i, 0));
        }
        assert_eq!(e.len(), 3);
        assert_eq!(e.untracked, 2);
        let (_, pl) = e.observe(p(20_000, 99, 5, 0));
        assert_eq!(pl, Placement::New);
        assert_eq!(e.len(), 1);
        assert!(e.by_addr.len() == 1 && e.by_fingerprint.len() == 1);
    }

    #[test]
    fn a_track_remembers_only_its_recent_addresses() {
        let mut e = est();
        for i in 0..1000u64 {
            e.observe(p(i as i64 * 5_000, 1000 + i, 7, 0));
        }
        assert_eq!(e.len(), 1);
        assert_eq!(e.by_addr.len(), ADDRS_PER_TRACK);
    }

    #[test]
    fn recent_addresses_keep_their_order() {
        let mut r = RecentAddrs::one(1);
        for a in 2..=ADDRS_PER_TRACK as u64 {
            assert_eq!(r.push(a), None);
        }
        assert_eq!(r.push(100), Some(1));
        assert_eq!(r.push(101), Some(2));
        r.remove(5);
        r.remove(42);
        assert_eq!(r.as_slice(), [3, 4, 6, 7, 8, 100, 101]);
        assert_eq!(r.push(102), None);
        assert_eq!(r.push(103), Some(3));
        assert_eq!(r.as_slice(), [4, 6, 7, 8, 100, 101, 102, 103]);
    }

    #[test]
    fn without_linking_every_address_is_a_device() {
        let mut e = Estimator::new(Settings {
            link: false,
            expire_ms: 300_000,
            burst_ms: 1000,
            max_tracks: 100,
        });
        e.observe(p(0, 1, 7, 0));
        e.observe(p(10, 2, 7, 1));
        assert_eq!(e.created, 2);
    }

    /// One phone's scan: `fps` fingerprints, each from a fresh address, within 200 ms of `ts`.
    fn scan(
        e: &mut Estimator,
        ts: i64,
        next_addr: &mut u64,
        fps: &[u64],
    ) -> Vec<(Option<u64>, Placement)> {
        fps.iter()
            .enumerate()
            .map(|(i, &fp)| {
                *next_addr += 1;
                e.observe(p(
                    ts + 100 * i as i64,
                    *next_addr,
                    fp,
                    (*next_addr * 977 % 4096) as u16,
                ))
            })
            .collect()
    }

    #[test]
    fn a_phone_with_two_fingerprints_is_folded_into_one_track() {
        let mut e = est();
        let mut addr = 0;
        let mut merged_at = None;
        for b in 0..10i64 {
            let placed = scan(&mut e, b * 40_000, &mut addr, &[7, 8]);
            if let Some((Some(into), Placement::Merged(from))) = placed.get(1).copied() {
                assert!(merged_at.is_none(), "folded once");
                assert!(from > into);
                merged_at = Some(b);
            }
        }
        // Two tracks until their bursts had coincided TWIN_MIN_SHARED times, then one.
        assert_eq!(merged_at, Some(TWIN_MIN_SHARED as i64 - 1));
        assert_eq!((e.len(), e.merged), (1, 1));
        // Both fingerprints now link to the one track: no new track for the phone.
        let before = e.created;
        let placed = scan(&mut e, 500_000, &mut addr, &[7, 8]);
        assert!(
            placed.iter().all(|(_, pl)| *pl == Placement::Linked),
            "{placed:?}"
        );
        assert_eq!(placed[0].0, placed[1].0);
        assert_eq!(e.created, before);
    }

    #[test]
    fn phones_scanning_at_their_own_moments_are_never_folded() {
        let mut e = est();
        let mut addr = 0;
        // Two phones of other models, one scanning every 40 s, the other every 47 s, for two
        // hours (their scans coincide now and then), and a third that coincides with the first
        // three times in a row and then drifts away.
        let mut events: Vec<(i64, u64)> = Vec::new();
        events.extend((0..180).map(|b| (b * 40_000, 7)));
        events.extend((0..153).map(|b| (5_000 + b * 47_000, 8)));
        events.extend((0..3).map(|b| (b * 40_000 + 300, 9)));
        events.extend((3..118).map(|b| (b * 61_000 + 20_000, 9)));
        events.sort();
        for (ts, fp) in events {
            scan(&mut e, ts, &mut addr, &[fp]);
        }
        assert_eq!(e.merged, 0);
        assert_eq!(e.len(), 3);
    }

    #[test]
    fn a_split_phone_that_keeps_bursting_with_its_twin_is_folded_and_stops_splitting() {
        let mut e = est();
        // A phone sending from two addresses at once within each scan (A B A): the
        // interleaving rule splits it, then its two tracks burst together.
        let (a, _) = e.observe(p(0, 1, 7, 500));
        e.observe(p(15, 2, 7, 3900));
        assert_eq!(e.observe(p(25, 1, 7, 501)).1, Placement::Split);
        let mut folded = false;
        for b in 1..8i64 {
            let t = b * 45_000;
            for (dt, addr) in [(0, 1), (15, 2), (30, 1), (45, 2)] {
                let (x, pl) = e.observe(p(t + dt, addr, 7, (b * 4 + dt) as u16));
                folded |= matches!(pl, Placement::Merged(_));
                assert_ne!(pl, Placement::Split, "a folded phone does not split again");
                if folded {
                    assert_eq!(x, a);
                }
            }
        }
        assert!(folded);
        assert_eq!(e.len(), 1);
    }

    #[test]
    fn a_slow_phone_keeps_its_track_over_silences_longer_than_expiry() {
        let mut e = est();
        let mut addr = 0;
        // Screen off: a scan every 2-4.5 min, a new address every scan; then seven minutes
        // without a scan, longer than expire_ms (5 min) but under three of its intervals.
        let mut ts = 0;
        let mut ids = Vec::new();
        for gap in [0, 150_000, 135_000, 270_000, 200_000, 420_000, 140_000] {
            ts += gap;
            ids.push(scan(&mut e, ts, &mut addr, &[7])[0].0);
        }
        assert!(ids.iter().all(|i| *i == ids[0]), "{ids:?}");
        assert_eq!(e.created, 1);
        // The rhythm earns at most MAX_SILENCE_FACTOR times expire_ms.
        let id = ids[0].unwrap_or(0);
        assert!(e.silence_ms(id) > 300_000 && e.silence_ms(id) <= MAX_SILENCE_FACTOR * 300_000);
        // Silent longer than that: gone; the next address is a new device.
        ts += MAX_SILENCE_FACTOR * 300_000 + 1_000;
        assert_eq!(scan(&mut e, ts, &mut addr, &[7])[0].1, Placement::New);
    }

    #[test]
    fn without_a_rhythm_a_silence_longer_than_expiry_ends_the_track() {
        let mut e = est();
        let mut addr = 0;
        let first = scan(&mut e, 0, &mut addr, &[7])[0].0;
        assert_eq!(e.silence_ms(first.unwrap_or(0)), 300_000);
        assert_eq!(scan(&mut e, 301_000, &mut addr, &[7])[0].1, Placement::New);
    }

    #[test]
    fn a_device_probing_every_second_absorbs_nobody() {
        let mut e = est();
        let mut addr = 1000;
        // A randomized device probing every 1.01 s from one address (a misbehaving scanner,
        // or a sender trying to swallow the phones around it) ...
        let mut events: Vec<(i64, u64)> = (0..3600).map(|i| (i * 1010, 0)).collect();
        // ... and three phones of other models scanning every 30-45 s.
        for (k, period) in [(7u64, 30_000i64), (8, 37_000), (9, 45_000)] {
            events.extend((0..3_600_000 / period).map(|b| (2_000 + b * period, k)));
        }
        events.sort();
        for (ts, fp) in events {
            if fp == 0 {
                e.observe(p(ts, 1, 5, (ts / 1010 % 4096) as u16));
            } else {
                scan(&mut e, ts, &mut addr, &[fp]);
            }
        }
        assert_eq!(e.merged, 0);
        assert_eq!(e.len(), 4);
    }

    #[test]
    fn without_linking_nothing_is_folded() {
        let mut e = Estimator::new(Settings {
            link: false,
            ..est().set
        });
        let mut addr = 0;
        for b in 0..10i64 {
            scan(&mut e, b * 40_000, &mut addr, &[7, 8]);
        }
        assert_eq!(e.merged, 0);
        assert_eq!(e.created, 20, "every address its own track");
    }
}
