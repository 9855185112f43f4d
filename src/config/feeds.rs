//! The one list of input feeds (docs/design.md, "Adding a feed"): a new feed is its folder,
//! `src/source/<folder>/` (its `Feed` in `mod.rs`, its section in `config.rs`), and one line
//! here.
//!
//! The list names each feed's section by its path (the feed's `config.rs`, which is built on the
//! configuration's leaves only) and its `Feed` type by name, so reading it never pulls a feed's
//! logic in: the configuration builds `SourcesConfig` from it (`crate::config`) and the sources
//! build `FEEDS` from it (`crate::source`), each through its own macro.

/// Hands the feeds to the macro `$then`, one `folder: FeedType, section type;` per feed, in start
/// order: `folder` is `[sources.<folder>]` and `src/source/<folder>/`, `FeedType` its
/// `source::Feed` (in the folder's `mod.rs`), the section type its `[sources.<folder>]`.
macro_rules! with_feeds {
    ($then:ident) => {
        $then! {
            sim: Sim, crate::source::sim::config::SimConfig;
            ble: Ble, crate::source::ble::config::BleConfig;
            wifi: Wifi, crate::source::wifi::config::WifiConfig;
            pos: Pos, crate::source::pos::config::PosConfig;
        }
    };
}
pub(crate) use with_feeds;
