//! The one list of input feeds (docs/design.md, "Adding a feed"): a new feed is its folder,
//! `src/source/<folder>/` (its `Feed` in `mod.rs`, its section in `config.rs`), and one line
//! here.
//!
//! The list holds names only, no paths, so this leaf imports nothing: the configuration builds
//! `SourcesConfig` from it (`crate::config`) and the sources declare their modules and `FEEDS`
//! from it (`crate::source`), each through its own macro.

/// Hands the feeds to the macro `$then`, one `folder: FeedType, SectionType;` per feed, in start
/// order: `folder` is `[sources.<folder>]` and `src/source/<folder>/`, `FeedType` its
/// `source::Feed`, `SectionType` its section in `src/source/<folder>/config.rs`.
macro_rules! with_feeds {
    ($then:ident) => {
        $then! {
            sim: Sim, SimConfig;
            ble: Ble, BleConfig;
            wifi: Wifi, WifiConfig;
            pos: Pos, PosConfig;
        }
    };
}
pub(crate) use with_feeds;
