//! Equipment learned by its vendor (docs/wifi.md, "People", rule 8): a store buys its PCs,
//! tills, handhelds and printers in batches, and such devices keep the globally unique address
//! their maker gave them, whose first three bytes name the maker. Shoppers' phones draw
//! random addresses. So when several devices with globally unique addresses of one maker are
//! in the store within a key epoch, that maker's devices are taken for the store's equipment,
//! exactly as if they were listed in `[sources.wifi] infrastructure`, without anyone having to
//! write the list.
//!
//! Held in RAM only, within the key epoch: the keyed hash of each maker prefix (under the
//! epoch's address key, so it cannot be compared across epochs or with anything outside) and
//! the address hashes of at most `size` of its devices. Cleared at every key rotation with the
//! device tracks; at most `cap` makers are followed (beyond it a new maker is not learned).

use std::collections::HashMap;

/// The size `storegw calibrate wifi` tries: "several" devices of one maker. Two can be a
/// couple's laptops; a third of the same maker the same day, each heard in the store, is a
/// batch.
pub const SIZE: usize = 3;

/// One maker prefix seen in the store.
struct Maker {
    /// Address hashes of its devices seen in the store, until there are `size` of them.
    members: Vec<u64>,
    /// `size` devices were seen: its devices are equipment for the rest of the epoch.
    fleet: bool,
}

/// The makers of devices with globally unique addresses seen in the store this key epoch.
pub struct Fleets {
    size: usize,
    cap: usize,
    makers: HashMap<u64, Maker>,
}

impl Fleets {
    /// Learns fleets of `size` devices (0: never), following at most `cap` makers.
    pub fn new(size: usize, cap: usize) -> Fleets {
        Fleets {
            size,
            cap,
            makers: HashMap::new(),
        }
    }

    /// Is a device of `maker` (the keyed hash of its address's first three bytes) with
    /// address hash `addr` the store's equipment? `in_store` when this probe placed it in the
    /// store: only such probes teach a fleet, so devices heard from outside never make one.
    pub fn observe(&mut self, maker: u64, addr: u64, in_store: bool) -> bool {
        if self.size == 0 {
            return false;
        }
        if !in_store {
            return self.makers.get(&maker).is_some_and(|m| m.fleet);
        }
        let size = self.size;
        if !self.makers.contains_key(&maker) {
            if self.makers.len() >= self.cap {
                return false;
            }
            self.makers.insert(
                maker,
                Maker {
                    members: Vec::new(),
                    fleet: false,
                },
            );
        }
        let Some(m) = self.makers.get_mut(&maker) else {
            return false;
        };
        if !m.fleet && !m.members.contains(&addr) {
            m.members.push(addr);
            if m.members.len() >= size {
                m.fleet = true;
                // Which devices they were is no longer needed: every device of the maker is.
                m.members = Vec::new();
            }
        }
        m.fleet
    }

    /// Learning at all (a size is set): a maker's prefix is hashed only then.
    pub fn learning(&self) -> bool {
        self.size > 0
    }

    /// Makers whose devices are equipment now.
    pub fn fleets(&self) -> usize {
        self.makers.values().filter(|m| m.fleet).count()
    }

    /// Forgets everything (a new key epoch: the hashes no longer mean anything).
    pub fn clear(&mut self) {
        self.makers = HashMap::new();
    }

    /// Applies a reloaded `equipment_fleet` size; learned fleets are kept.
    pub fn resize(&mut self, size: usize, cap: usize) {
        self.size = size;
        self.cap = cap;
        if size == 0 {
            self.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_maker_becomes_a_fleet_with_its_third_device_in_the_store() {
        let mut f = Fleets::new(3, 100);
        assert!(!f.observe(7, 1, true));
        assert!(!f.observe(7, 1, true), "one device seen twice is one");
        assert!(!f.observe(7, 2, true));
        assert!(!f.observe(8, 9, true), "another maker");
        assert!(f.observe(7, 3, true));
        assert!(
            f.observe(7, 1, true),
            "its earlier devices are equipment from now on"
        );
        assert!(
            f.observe(7, 4, false),
            "and so are its devices heard from outside"
        );
        assert!(!f.observe(8, 9, true));
        assert_eq!(f.fleets(), 1);
        f.clear();
        assert!(!f.observe(7, 1, true), "a new epoch learns again");
    }

    #[test]
    fn devices_heard_from_outside_never_make_a_fleet() {
        let mut f = Fleets::new(2, 100);
        for a in 0..10 {
            assert!(!f.observe(7, a, false));
        }
        assert_eq!(f.fleets(), 0);
    }

    #[test]
    fn off_and_capped() {
        let mut off = Fleets::new(0, 100);
        for a in 0..10 {
            assert!(!off.observe(7, a, true));
        }
        let mut capped = Fleets::new(2, 1);
        assert!(!capped.observe(1, 1, true));
        assert!(
            !capped.observe(2, 1, true),
            "a second maker is beyond the cap"
        );
        assert!(!capped.observe(2, 2, true));
        assert!(capped.observe(1, 2, true), "the followed one still learns");
        capped.resize(0, 1);
        assert!(
            !capped.observe(1, 2, true),
            "switched off: nothing learned stays"
        );
    }
}
