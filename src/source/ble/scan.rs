//! Live scanning through BlueZ (btleplug), with a watchdog against silently stalled scanners.
//!
//! BlueZ hands out parsed advertisement properties, not raw AD bytes, so each advert is
//! rebuilt into AD structures and goes through the same decoder and aggregator as a replay.
//! BlueZ missing or the adapter gone is a source failure reported in status; the source keeps
//! retrying and never takes the daemon down.

use super::aggregate::Aggregator;
use super::btsnoop::Report;
use super::config::BleConfig;
use crate::event::{now_ms, Event};
use crate::source::SourceContext;
use crate::telemetry::health::SourceState;
use btleplug::api::{
    AddressType, Central, CentralEvent, Manager as _, Peripheral as _, ScanFilter,
};
use btleplug::platform::{Adapter, Manager, PeripheralId};
use futures_util::StreamExt;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// BlueZ splits one advertisement into several property signals: signals of one device within
/// this are one advertisement (no BLE device advertises faster than every 20 ms).
const COALESCE: Duration = Duration::from_millis(10);
/// Bound of the per-device map (RAM only; cleared when exceeded).
const MAX_TRACKED: usize = 20_000;

/// Why a scanning session ended.
enum End {
    Shutdown,
    Reopen(String),
}

/// Runs the scanner until shutdown, reopening BlueZ and the adapter as needed.
pub async fn run(ctx: SourceContext) {
    let cfg = ctx.cfg.sources.ble.clone();
    let mut agg = Aggregator::new(&cfg, ctx.cfg.privacy.min_count, ctx.devices.clone());
    let mut stop = ctx.shutdown.clone();
    let health = ctx.telemetry.health();
    health.set_source("ble", SourceState::Starting, None);
    loop {
        if *stop.borrow() {
            break;
        }
        match open(&cfg).await {
            Ok(adapter) => {
                health.set_source("ble", SourceState::Running, None);
                match session(&ctx, &cfg, &adapter, &mut agg).await {
                    End::Shutdown => break,
                    End::Reopen(why) => {
                        tracing::warn!(reason = %why, "BLE: reopening the adapter");
                        ctx.telemetry.source_restart("ble", "adapter");
                        health.set_source("ble", SourceState::Degraded, Some(why));
                        let _ = adapter.stop_scan().await;
                        continue;
                    }
                }
            }
            Err(e) => {
                tracing::error!("BLE: {e}");
                health.set_source("ble", SourceState::Failed, Some(e));
                let sleep = tokio::time::sleep(cfg.retry_interval.0);
                tokio::pin!(sleep);
                let stopping = loop {
                    tokio::select! {
                        _ = &mut sleep => break false,
                        r = stop.changed() => {
                            if r.is_err() || *stop.borrow() {
                                break true;
                            }
                        }
                    }
                };
                if stopping {
                    break;
                }
            }
        }
    }
    let mut out = Vec::new();
    agg.flush(now_ms(), &mut out);
    for e in out {
        let _ = ctx.tx.send(e).await;
    }
    health.set_source("ble", SourceState::Stopped, None);
}

/// Connects to BlueZ, picks the adapter and starts scanning.
async fn open(cfg: &BleConfig) -> Result<Adapter, String> {
    let manager = Manager::new()
        .await
        .map_err(|e| format!("cannot reach BlueZ on the system D-Bus: {e}"))?;
    let adapters = manager
        .adapters()
        .await
        .map_err(|e| format!("cannot list Bluetooth adapters (is bluetoothd running?): {e}"))?;
    let mut chosen = None;
    for a in adapters {
        if cfg.adapter.is_empty() {
            chosen = Some(a);
            break;
        }
        let info = a.adapter_info().await.unwrap_or_default();
        if info.split_whitespace().next() == Some(cfg.adapter.as_str()) {
            chosen = Some(a);
            break;
        }
    }
    let adapter = chosen.ok_or_else(|| {
        if cfg.adapter.is_empty() {
            "no Bluetooth adapter found".to_string()
        } else {
            format!("Bluetooth adapter `{}` not found", cfg.adapter)
        }
    })?;
    adapter
        .start_scan(ScanFilter::default())
        .await
        .map_err(|e| format!("cannot start scanning: {e}"))?;
    Ok(adapter)
}

/// Rebuilds AD structures from what BlueZ reports about a device (service UUIDs as u128).
pub fn synthesize_ad(
    manufacturer: &HashMap<u16, Vec<u8>>,
    service: &[(u128, &[u8])],
    tx_power: Option<i16>,
    out: &mut Vec<u8>,
) {
    out.clear();
    if let Some(p) = tx_power.and_then(|p| i8::try_from(p).ok()) {
        out.extend_from_slice(&[2, 0x0A, p as u8]);
    }
    let mut companies: Vec<&u16> = manufacturer.keys().collect();
    companies.sort();
    for c in companies {
        let d = manufacturer.get(c).map(Vec::as_slice).unwrap_or_default();
        if d.len() + 3 <= 255 {
            out.push((d.len() + 3) as u8);
            out.push(0xFF);
            out.extend_from_slice(&c.to_le_bytes());
            out.extend_from_slice(d);
        }
    }
    const BASE_LOW: u128 = 0x0000_1000_8000_0080_5f9b_34fb;
    for &(v, d) in service {
        let (t, uuid_bytes): (u8, Vec<u8>) = if v & ((1u128 << 96) - 1) == BASE_LOW {
            let short = (v >> 96) as u32;
            match u16::try_from(short) {
                Ok(s) => (0x16, s.to_le_bytes().to_vec()),
                Err(_) => (0x20, short.to_le_bytes().to_vec()),
            }
        } else {
            (0x21, v.to_le_bytes().to_vec())
        };
        let len = 1 + uuid_bytes.len() + d.len();
        if len <= 255 {
            out.push(len as u8);
            out.push(t);
            out.extend_from_slice(&uuid_bytes);
            out.extend_from_slice(d);
        }
    }
}

async fn send_all(ctx: &SourceContext, out: &mut Vec<Event>) -> bool {
    for e in out.drain(..) {
        if ctx.tx.send(e).await.is_err() {
            return false;
        }
    }
    true
}

/// What the scanner remembers of a device between BlueZ signals (RAM only, source stage).
struct Dev {
    addr: [u8; 6],
    addr_type: u8,
    rssi: Option<i16>,
    tx_power: Option<i16>,
    mfg: HashMap<u16, Vec<u8>>,
    svc: HashMap<u128, Vec<u8>>,
    /// First signal of an advertisement not yet passed on.
    pending: Option<Instant>,
}

async fn fetch(adapter: &Adapter, id: &PeripheralId) -> Option<Dev> {
    let p = adapter.peripheral(id).await.ok()?;
    let props = p.properties().await.ok()??;
    Some(Dev {
        addr: props.address.into_inner(),
        addr_type: match props.address_type {
            Some(AddressType::Public) => 0,
            _ => 1,
        },
        rssi: props.rssi,
        tx_power: props.tx_power_level,
        mfg: props.manufacturer_data,
        svc: props
            .service_data
            .into_iter()
            .map(|(u, d)| (u.as_u128(), d))
            .collect(),
        pending: None,
    })
}

/// One scanning session on an open adapter, until shutdown or the watchdog gives up on it.
async fn session(
    ctx: &SourceContext,
    cfg: &BleConfig,
    adapter: &Adapter,
    agg: &mut Aggregator,
) -> End {
    let health = ctx.telemetry.health();
    let mut stop = ctx.shutdown.clone();
    let mut config = ctx.config.clone();
    let mut config_open = true;
    let mut events = match adapter.events().await {
        Ok(e) => e,
        Err(e) => return End::Reopen(format!("cannot subscribe to adapter events: {e}")),
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut flush = tokio::time::interval(COALESCE);
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stall = cfg.stall_timeout.0;
    let mut last_advert = Instant::now();
    let mut scan_restarted = false;
    let mut devs: HashMap<PeripheralId, Dev> = HashMap::new();
    let mut exported = agg.stats.clone();
    let mut ad = Vec::with_capacity(64);
    let mut out = Vec::new();
    loop {
        tokio::select! {
            changed = config.changed(), if config_open => {
                if changed.is_ok() {
                    let c = config.borrow_and_update().clone();
                    agg.reconfigure(&c.sources.ble, c.privacy.min_count);
                    tracing::info!("BLE: allowlist and thresholds reloaded");
                } else {
                    config_open = false;
                }
            }
            ev = events.next() => {
                let Some(ev) = ev else {
                    return End::Reopen("adapter event stream ended".into());
                };
                let id = match &ev {
                    CentralEvent::DeviceDiscovered(id)
                    | CentralEvent::RssiUpdate { id, .. }
                    | CentralEvent::ManufacturerDataAdvertisement { id, .. }
                    | CentralEvent::ServiceDataAdvertisement { id, .. } => id.clone(),
                    CentralEvent::StateUpdate(s) => {
                        tracing::info!(state = ?s, "BLE adapter state");
                        continue;
                    }
                    _ => continue,
                };
                if !devs.contains_key(&id) {
                    if devs.len() >= MAX_TRACKED {
                        devs.clear();
                    }
                    let Some(d) = fetch(adapter, &id).await else { continue };
                    devs.insert(id.clone(), d);
                }
                let Some(d) = devs.get_mut(&id) else { continue };
                match ev {
                    CentralEvent::RssiUpdate { rssi, .. } => d.rssi = Some(rssi),
                    CentralEvent::ManufacturerDataAdvertisement { manufacturer_data, .. } => {
                        d.mfg.extend(manufacturer_data)
                    }
                    CentralEvent::ServiceDataAdvertisement { service_data, .. } => d
                        .svc
                        .extend(service_data.into_iter().map(|(u, v)| (u.as_u128(), v))),
                    _ => {}
                }
                d.pending.get_or_insert_with(Instant::now);
            }
            _ = flush.tick() => {
                let now = Instant::now();
                let mut any = false;
                for d in devs.values_mut() {
                    match d.pending {
                        Some(t) if now.duration_since(t) >= COALESCE / 2 => d.pending = None,
                        _ => continue,
                    }
                    let mut svc: Vec<(u128, &[u8])> =
                        d.svc.iter().map(|(u, v)| (*u, v.as_slice())).collect();
                    svc.sort_by_key(|(u, _)| *u);
                    synthesize_ad(&d.mfg, &svc, d.tx_power, &mut ad);
                    let rep = Report {
                        addr: d.addr,
                        addr_type: d.addr_type,
                        event_type: 0,
                        rssi: d.rssi.and_then(|r| i8::try_from(r).ok()).filter(|r| *r != 127),
                        tx_power: None,
                        data: &ad,
                    };
                    agg.push(now_ms(), &rep, &mut out);
                    any = true;
                }
                if any {
                    last_advert = now;
                    if scan_restarted {
                        scan_restarted = false;
                        health.set_source("ble", SourceState::Running, None);
                    }
                    health.source_input("ble");
                    if !send_all(ctx, &mut out).await {
                        return End::Shutdown;
                    }
                }
            }
            _ = tick.tick() => {
                agg.tick(now_ms(), &mut out);
                agg.stats.export_since(&mut exported, ctx.telemetry.metrics());
                if !send_all(ctx, &mut out).await {
                    return End::Shutdown;
                }
                if last_advert.elapsed() >= stall {
                    if scan_restarted {
                        return End::Reopen(format!(
                            "no advertisement for {} s after a scan restart",
                            stall.as_secs()
                        ));
                    }
                    tracing::warn!(stall_s = stall.as_secs(), "BLE scanner stalled: restarting the scan");
                    ctx.telemetry.source_restart("ble", "scan");
                    health.set_source(
                        "ble",
                        SourceState::Degraded,
                        Some(format!("no advertisement for {} s; scan restarted", stall.as_secs())),
                    );
                    let _ = adapter.stop_scan().await;
                    if let Err(e) = adapter.start_scan(ScanFilter::default()).await {
                        return End::Reopen(format!("cannot restart the scan: {e}"));
                    }
                    scan_restarted = true;
                    last_advert = Instant::now();
                }
            }
            r = stop.changed() => {
                if r.is_err() || *stop.borrow() {
                    return End::Shutdown;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::ble::adv::{self, Frame};

    #[test]
    fn rebuilt_ad_decodes_like_the_air_format() {
        let mut mfg = HashMap::new();
        let mut ib = vec![0x02, 0x15];
        ib.extend_from_slice(&[0x42; 16]);
        ib.extend_from_slice(&[0, 5, 0, 6, 0xC5]);
        mfg.insert(0x004C, ib);
        let mut ad = Vec::new();
        synthesize_ad(&mfg, &[], Some(-4), &mut ad);
        let a = adv::decode(&ad);
        assert!(matches!(
            a.frame,
            Some(Frame::IBeacon {
                major: 5,
                minor: 6,
                tx_power: -59,
                ..
            })
        ));
        assert_eq!(
            (a.company, a.tx_power, a.malformed),
            (Some(0x004C), Some(-4), 0)
        );
        // Eddystone service data under the 128-bit form of 0xFEAA.
        let feaa: u128 = 0x0000_feaa_0000_1000_8000_0080_5f9b_34fb;
        let mut uid = vec![0x00, 0xE3];
        uid.extend_from_slice(&[0x12; 16]);
        synthesize_ad(&HashMap::new(), &[(feaa, &uid)], None, &mut ad);
        assert!(matches!(
            adv::decode(&ad).frame,
            Some(Frame::EddystoneUid { tx_power: -29, .. })
        ));
        // A non-base 128-bit UUID keeps its full form.
        synthesize_ad(
            &HashMap::new(),
            &[(0x1234_u128 << 64, &[1, 2])],
            None,
            &mut ad,
        );
        assert_eq!(ad.len(), 2 + 16 + 2);
        assert_eq!(ad[1], 0x21);
    }
}
