//! Equipment learned by its maker (docs/wifi.md, "People", rule 8): a store buys its PCs,
//! tills, handhelds and printers in batches, and such devices keep the globally unique address
//! their maker gave them, whose first three bytes name the maker. Shoppers' phones draw
//! random addresses. So when several devices with globally unique addresses of one maker are
//! heard in the store within a key epoch, that maker's devices heard in the store are taken
//! for the store's equipment, as if they were listed in `[sources.wifi] infrastructure`,
//! without anyone having to write the list.
//!
//! Held in RAM only, within the key epoch: the keyed hash of each maker prefix (under the
//! epoch's address key, so it cannot be compared across epochs or with anything outside) and
//! the address hashes of fewer than `size` of its devices (at most [`MAX_SIZE`]), for at most
//! `cap` makers (beyond it a new maker is not learned): at most about 150 bytes per maker.
//! Cleared at every key rotation with the device tracks.

use std::collections::hash_map::Entry;
use std::collections::HashMap;

/// The size `storegw calibrate wifi` tries when the configuration sets none: "several"
/// devices of one maker. Two can be a couple's laptops; a third of the same maker the same
/// day, each heard in the store, is a batch.
pub const SIZE: usize = 3;

/// The size the calibration learns at and tries: the configured one, [`SIZE`] when none is.
pub fn size_to_try(configured: usize) -> usize {
    match configured {
        0 => SIZE,
        n => n,
    }
}

/// The largest size accepted: it bounds the address hashes held per maker.
pub const MAX_SIZE: usize = 16;

/// One maker prefix heard in the store.
struct Maker {
    /// Address hashes of its devices heard in the store, until there are `size` of them.
    members: Vec<u64>,
    /// `size` devices were heard: its devices are equipment for the rest of the epoch.
    fleet: bool,
}

/// The makers of devices with globally unique addresses heard in the store this key epoch.
pub struct Fleets {
    size: usize,
    cap: usize,
    makers: HashMap<u64, Maker>,
}

impl Fleets {
    /// Learns fleets of `size` devices (0: never; at most [`MAX_SIZE`]), following at most
    /// `cap` makers.
    pub fn new(size: usize, cap: usize) -> Fleets {
        Fleets {
            size: size.min(MAX_SIZE),
            cap,
            makers: HashMap::new(),
        }
    }

    /// Learning at all (a size is set): a maker's prefix is hashed only then.
    pub fn learning(&self) -> bool {
        self.size > 0
    }

    /// A device of `maker` (the keyed hash of its address's first three bytes) with address
    /// hash `addr` was heard in the store: is it the store's equipment? Only in-store probes
    /// of well-received frames with a globally unique address may be passed here.
    pub fn observe(&mut self, maker: u64, addr: u64) -> bool {
        if self.size == 0 {
            return false;
        }
        let full = self.makers.len() >= self.cap;
        let m = match self.makers.entry(maker) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(_) if full => return false,
            Entry::Vacant(e) => e.insert(Maker {
                members: Vec::new(),
                fleet: false,
            }),
        };
        if !m.fleet && !m.members.contains(&addr) {
            m.members.push(addr);
            if m.members.len() >= self.size {
                m.fleet = true;
                // Which devices they were is no longer needed: every device of the maker is.
                m.members = Vec::new();
            }
        }
        m.fleet
    }

    /// Makers whose devices are equipment now.
    pub fn fleets(&self) -> usize {
        self.makers.values().filter(|m| m.fleet).count()
    }

    /// Forgets everything (a new key epoch: the hashes no longer mean anything).
    pub fn clear(&mut self) {
        self.makers = HashMap::new();
    }

    /// Applies a reloaded size and cap: a new size learns again from nothing, so no maker
    /// stays a fleet by a rule that no longer applies.
    pub fn resize(&mut self, size: usize, cap: usize) {
        let size = size.min(MAX_SIZE);
        if size != self.size || cap < self.makers.len() {
            self.clear();
        }
        self.size = size;
        self.cap = cap;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_maker_becomes_a_fleet_with_its_third_device() {
        let mut f = Fleets::new(3, 100);
        assert!(!f.observe(7, 1));
        assert!(!f.observe(7, 1), "one device heard twice is one");
        assert!(!f.observe(7, 2));
        assert!(!f.observe(8, 9), "another maker");
        assert!(f.observe(7, 3));
        assert!(
            f.observe(7, 1),
            "its earlier devices are equipment from now on"
        );
        assert!(f.observe(7, 4), "and so are its new ones");
        assert!(!f.observe(8, 9));
        assert_eq!(f.fleets(), 1);
        f.clear();
        assert!(!f.observe(7, 1), "a new epoch learns again");
    }

    #[test]
    fn off_capped_and_resized() {
        let mut off = Fleets::new(0, 100);
        assert!(!off.learning());
        for a in 0..10 {
            assert!(!off.observe(7, a));
        }
        let mut capped = Fleets::new(2, 1);
        assert!(!capped.observe(1, 1));
        assert!(!capped.observe(2, 1), "a second maker is beyond the cap");
        assert!(!capped.observe(2, 2));
        assert!(capped.observe(1, 2), "the followed one still learns");
        capped.resize(3, 1);
        assert!(
            !capped.observe(1, 2),
            "a new size learns again from nothing"
        );
        capped.resize(0, 1);
        assert!(!capped.learning());
        let huge = Fleets::new(1000, 1);
        assert_eq!(huge.size, MAX_SIZE, "the size is bounded");
    }
}
