//! The live capture path on a real AF_PACKET socket. There is no monitor-mode interface here,
//! so frames are injected on `lo` with a second raw socket and the link type is forced to
//! radiotap through the `LinkMode` seam. Needs CAP_NET_RAW: skips with a printed reason
//! otherwise.

mod common;

use std::sync::Arc;
use std::time::Duration;
use storegw::source::wifi::capture::{Capture, CaptureError, Injector, LinkMode};
use storegw::source::wifi::fcs::crc32;
use storegw::source::wifi::frame::{decode, Decoded, LINKTYPE_RADIOTAP};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A radiotap (Flags with FCS, Channel, dBm signal) + 802.11 management frame.
fn frame(fc0: u8, sa: [u8; 6], rssi: i8, seq: u16, ssid: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8, 0, 0, 0];
    f.extend((2u32 | 8 | 32).to_le_bytes());
    f.push(0x10);
    f.push(0);
    f.extend(2437u16.to_le_bytes());
    f.extend(0x00a0u16.to_le_bytes());
    f.push(rssi as u8);
    f[2] = f.len() as u8;
    let start = f.len();
    f.extend([fc0, 0, 0, 0]);
    f.extend([0xff; 6]);
    f.extend(sa);
    f.extend([0xff; 6]);
    f.extend((seq << 4).to_le_bytes());
    f.extend([0, ssid.len() as u8]);
    f.extend_from_slice(ssid);
    f.extend([1, 4, 0x02, 0x04, 0x0b, 0x16]);
    let c = crc32(&f[start..]);
    f.extend(c.to_le_bytes());
    f
}

fn sa(i: u8) -> [u8; 6] {
    [0x5a, 0x0e, 0x57, 0x90, 0x00, i]
}

/// Opens capture on lo, or None (skip) without CAP_NET_RAW.
fn open_lo(bpf: bool) -> Result<Option<Capture>, Box<dyn std::error::Error>> {
    match Capture::open("lo", LinkMode::Force(LINKTYPE_RADIOTAP), bpf) {
        Ok(c) => Ok(Some(c)),
        Err(CaptureError::NoPermission(e)) => {
            eprintln!("skipping: no CAP_NET_RAW for AF_PACKET ({e}); run the tests as root");
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

#[tokio::test]
async fn injected_probes_arrive_through_the_kernel_filter() -> TestResult {
    let Some(cap) = open_lo(true)? else {
        return Ok(());
    };
    let inj = Injector::open("lo")?;
    // A beacon and a probe response must be dropped by the filter; five probes pass.
    inj.send(&frame(0x80, sa(99), -40, 1, b""))?;
    inj.send(&frame(0x50, sa(98), -40, 1, b""))?;
    for i in 0..5u8 {
        inj.send(&frame(0x40, sa(i), -40 - i as i8, 100 + i as u16, b""))?;
    }
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while got.len() < 5 {
        let r = tokio::time::timeout_at(deadline, cap.recv(&mut buf)).await??;
        let data = &buf[..r.len];
        match decode(cap.linktype, data, r.cut, true) {
            Decoded::Probe(p) => {
                if p.req.sa[..5] == sa(0)[..5] {
                    got.push((p.req.sa[5], p.rssi, p.req.seq, p.fcs));
                }
            }
            other => panic!("the filter let a non-probe frame through: {other:?}"),
        }
    }
    got.sort_by_key(|g| g.0);
    assert_eq!(cap.kernel_drops(), 0);
    for (i, g) in got.iter().enumerate() {
        let i = i as u8;
        assert_eq!(
            *g,
            (
                i,
                Some(-40 - i as i8),
                100 + i as u16,
                storegw::source::wifi::frame::FcsStatus::Good
            )
        );
    }
    Ok(())
}

#[tokio::test]
async fn without_filter_other_frames_arrive_too() -> TestResult {
    let Some(cap) = open_lo(false)? else {
        return Ok(());
    };
    let inj = Injector::open("lo")?;
    inj.send(&frame(0x80, sa(77), -40, 1, b""))?;
    let mut buf = vec![0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let r = tokio::time::timeout_at(deadline, cap.recv(&mut buf)).await??;
        if buf[..r.len] == frame(0x80, sa(77), -40, 1, b"")[..] {
            // (A beacon without its 12 bytes of fixed fields: counted as damaged, not a probe.)
            let d = decode(cap.linktype, &buf[..r.len], r.cut, true);
            assert!(matches!(d, Decoded::Malformed(_)), "{d:?}");
            return Ok(());
        }
    }
}

#[tokio::test]
async fn clear_errors_for_missing_and_non_monitor_interfaces() -> TestResult {
    match Capture::open("nosuchwlan9", LinkMode::FromDevice, true) {
        Err(CaptureError::NoSuchInterface(n)) => assert_eq!(n, "nosuchwlan9"),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("opened a missing interface"),
    }
    match Capture::open("lo", LinkMode::FromDevice, true) {
        Err(CaptureError::NotMonitor { arphrd, .. }) => {
            assert_eq!(arphrd, 772);
            let msg = Capture::open("lo", LinkMode::FromDevice, true)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(
                msg.contains("not in monitor mode") && msg.contains("iw dev lo set type monitor")
            );
        }
        Err(CaptureError::NoPermission(_)) => {
            eprintln!("skipping the monitor-mode check: no CAP_NET_RAW");
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("lo accepted as a monitor interface"),
    }
    Ok(())
}

/// The whole live task: capture on lo → pipeline → pseudonymized census on the spool channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_task_emits_census_from_injected_probes() -> TestResult {
    if open_lo(true)?.is_none() {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let text = format!(
        "[gateway]\nstore_id = \"s1\"\ngateway_id = \"gw1\"\nstate_dir = \"{}\"\n\n[sources.wifi]\nenabled = true\ninterface = \"lo\"\nin_store_rssi = -60\n",
        dir.path().display()
    );
    let cfg = Arc::new(storegw::config::parse("test.toml", &text, None)?);
    let spool = Arc::new(storegw::spool::Spool::open(
        &dir.path().join("spool"),
        "gw1",
        &cfg.spool,
    )?);
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (_config_tx, config_rx) = tokio::sync::watch::channel(cfg.clone());
    let ctx = storegw::source::SourceContext {
        cfg: cfg.clone(),
        config: config_rx,
        tx,
        pos_sink: storegw::source::DurableSink::new(spool),
        devices: Arc::new(storegw::privacy::DevicePseudonymizer::new(
            Duration::from_secs(86_400),
            8,
        )?),
        shutdown: stop_rx,
        telemetry: storegw::telemetry::Telemetry::new(),
    };
    let task = tokio::spawn(storegw::source::wifi::live::run(
        ctx,
        LinkMode::Force(LINKTYPE_RADIOTAP),
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let inj = Injector::open("lo")?;
    for i in 0..4u8 {
        let rssi = if i < 2 { -50 } else { -80 };
        for seq in 0..3u16 {
            inj.send(&frame(0x40, sa(i), rssi, seq, b"shopwifi"))?;
        }
    }
    inj.send(&frame(0x80, sa(50), -30, 1, b""))?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop_tx.send(true)?;
    tokio::time::timeout(Duration::from_secs(5), task).await??;
    let mut census = Vec::new();
    while let Ok(e) = rx.try_recv() {
        let wire = String::from_utf8(e.to_wire("gw1", 1))?;
        assert!(
            !wire.contains("5a0e5790") && !wire.contains("5a:0e:57") && !wire.contains("shopwifi")
        );
        if e.kind == storegw::event::EventKind::WifiCensus {
            census.push(e.body());
        }
    }
    // The injection may straddle a minute boundary: sum over the windows.
    let sum = |k: &str| census.iter().filter_map(|c| c[k].as_u64()).sum::<u64>();
    assert_eq!(sum("probe_requests"), 12, "{census:?}");
    let max = |k: &str| {
        census
            .iter()
            .filter_map(|c| c[k].as_u64())
            .max()
            .unwrap_or(0)
    };
    assert!(max("devices") >= 2 && sum("devices") >= 4, "{census:?}");
    assert!(sum("in_store") >= 2 && sum("passer_by") >= 2, "{census:?}");
    Ok(())
}
