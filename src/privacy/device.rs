//! Device pseudonyms (docs/design.md, "Privacy model"): HMAC-SHA256 under a key that exists
//! only in RAM and is replaced every rotation period, aligned to local midnight, so pseudonyms
//! of different days cannot be linked, not even by the operator.

use hmac::{KeyInit, Mac};
use sha2::Sha256;
use std::sync::Mutex;
use zeroize::Zeroizing;

type HmacSha256 = hmac::Hmac<Sha256>;

const DAY: i64 = 86_400;

/// 32 bytes of key material that are wiped from RAM when dropped.
pub type DeviceKey = Zeroizing<[u8; 32]>;

/// Where fresh keys come from (the kernel CSPRNG; tests inject a failing one).
type KeySource = fn() -> Result<DeviceKey, String>;
/// UTC offset of the local time zone at a UTC instant, seconds (tests inject fixed zones).
type ZoneOffset = fn(i64) -> i64;

/// Loads the system time zone (`TZ`, else `/etc/localtime`) once, while the process is still
/// single-threaded; later conversions (`local_offset_at`) reuse it. Call first thing in `main`.
pub fn init_local_offset() {
    extern "C" {
        fn tzset();
    }
    // SAFETY: tzset (POSIX) only reads TZ and the zone files into libc's own state; nothing
    // else runs yet.
    unsafe { tzset() }
}

/// UTC offset in seconds of the system time zone at a UTC instant, daylight-saving time
/// included: the offset that applies *then*, not the one of today. 0 when the instant cannot
/// be converted.
pub fn local_offset_at(utc_s: i64) -> i64 {
    let t = utc_s as libc::time_t;
    if t as i64 != utc_s {
        return 0; // beyond a 32-bit time_t
    }
    // SAFETY: an all-zero `tm` is a valid value of a plain C struct.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: localtime_r is the reentrant form: it writes only into `tm`. The zone was loaded by
    // `init_local_offset`, and the process never changes TZ while it runs.
    let r = unsafe { libc::localtime_r(&t, &mut tm) };
    if r.is_null() {
        0
    } else {
        tm.tm_gmtoff as i64
    }
}

/// Fresh key material from the kernel CSPRNG (getrandom(2), which needs no file descriptor).
/// There is no fallback: without the CSPRNG there is no key, and nothing is pseudonymized.
pub fn random_key() -> Result<DeviceKey, String> {
    let mut k = Zeroizing::new([0u8; 32]);
    getrandom::fill(&mut k[..])
        .map_err(|e| format!("no device key: the kernel CSPRNG (getrandom) failed: {e}"))?;
    Ok(k)
}

/// Key epoch of a UTC instant given the local offset then. A rotation that divides a day
/// counts local wall-clock periods, so a daily key changes at local midnight whatever the
/// daylight-saving offset of that day; a multiple of a day counts local days; any other
/// period counts UTC periods.
fn epoch_at(rotation_s: i64, utc_s: i64, offset_s: i64) -> i64 {
    let local = utc_s.saturating_add(offset_s);
    if DAY % rotation_s == 0 {
        local.div_euclid(rotation_s)
    } else if rotation_s % DAY == 0 {
        local.div_euclid(DAY).div_euclid(rotation_s / DAY)
    } else {
        utc_s.div_euclid(rotation_s)
    }
}

struct KeyState {
    /// Highest epoch a key was drawn for (None: the first key is drawn but not used yet).
    epoch: Option<i64>,
    /// UTC second from which the current key served: a lower local epoch after it is the clock
    /// turned back by daylight saving, which must not bring back an older epoch; and a key of a
    /// rotation shorter than a day never serves longer than the rotation, even when the local
    /// clock repeats an hour.
    since_s: i64,
    /// The key of `epoch`; None once expired or after a failed draw.
    key: Option<DeviceKey>,
    /// A draw failed and was logged: log again only after a success.
    failing: bool,
}

/// Turns raw device identifiers into rotating pseudonyms.
pub struct DevicePseudonymizer {
    rotation_s: i64,
    bytes: usize,
    state: Mutex<KeyState>,
    source: KeySource,
    offset_at: ZoneOffset,
    /// Forced rotations so far (`rotate-keys` command): added to every epoch number, so the
    /// aggregators see a new epoch and forget their state exactly as at a scheduled rotation.
    generation: std::sync::atomic::AtomicI64,
}

impl DevicePseudonymizer {
    /// A pseudonymizer with a fresh key; `bytes` of the HMAC are kept (hex on the wire). Fails
    /// when the kernel gives no random key: the gateway must not start without one.
    pub fn new(rotation: std::time::Duration, bytes: usize) -> Result<DevicePseudonymizer, String> {
        Self::with_sources(rotation, bytes, random_key, local_offset_at)
    }

    fn with_sources(
        rotation: std::time::Duration,
        bytes: usize,
        source: KeySource,
        offset_at: ZoneOffset,
    ) -> Result<DevicePseudonymizer, String> {
        let key = source()?;
        Ok(DevicePseudonymizer {
            rotation_s: (rotation.as_secs().min(i64::MAX as u64) as i64).max(60),
            bytes: bytes.clamp(4, 32),
            state: Mutex::new(KeyState {
                epoch: None,
                since_s: i64::MIN,
                key: Some(key),
                failing: false,
            }),
            source,
            offset_at,
            generation: std::sync::atomic::AtomicI64::new(0),
        })
    }

    /// Forced rotations so far; a cached epoch is stale once this changes.
    pub fn generation(&self) -> i64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Rotates now (the `rotate-keys` command): the key is wiped, the next pseudonym draws a
    /// new one under a new epoch number, and nothing links observations across the change.
    pub fn rotate_now(&self) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        st.key = None;
        st.failing = false;
    }

    fn time_epoch(&self, now_ms: i64) -> i64 {
        let s = now_ms.div_euclid(1000);
        epoch_at(self.rotation_s, s, (self.offset_at)(s))
    }

    /// Key epoch of a time (see `privacy.rotation` in config/storegw.toml).
    pub fn epoch_of(&self, now_ms: i64) -> i64 {
        self.time_epoch(now_ms).saturating_add(self.generation())
    }

    /// The first instant (ms) after `now_ms` that belongs to a later key epoch: the next local
    /// midnight for a daily rotation, found with the time zone's offset at that instant.
    pub fn next_rotation_ms(&self, now_ms: i64) -> i64 {
        let s0 = now_ms.div_euclid(1000);
        let e0 = self.time_epoch(now_ms);
        let later = |s: i64| epoch_at(self.rotation_s, s, (self.offset_at)(s)) > e0;
        let mut lo = s0;
        // A boundary lies within one period plus the largest daylight-saving shift.
        let mut hi = s0.saturating_add(self.rotation_s).saturating_add(3 * 3600);
        if !later(hi) {
            return hi.saturating_mul(1000);
        }
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if later(mid) {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        hi.saturating_mul(1000)
    }

    /// Wipes the key once its epoch is over, so a quiet night does not keep yesterday's key in
    /// RAM until the next device is seen. The daemon calls this at every rotation.
    pub fn expire(&self, now_ms: i64) {
        let e = self.epoch_of(now_ms);
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let aged = self.rotation_s < DAY
            && st.key.is_some()
            && now_ms.div_euclid(1000).saturating_sub(st.since_s) >= self.rotation_s;
        if st.epoch.is_some_and(|cur| e > cur) || aged {
            st.key = None;
            st.epoch = Some(e.max(st.epoch.unwrap_or(e)));
            st.since_s = now_ms.div_euclid(1000);
        }
    }

    /// True while a key is held (tests: an expired key is gone).
    pub fn holds_key(&self) -> bool {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .key
            .is_some()
    }

    /// The pseudonym of `raw` at `now_ms` (lowercase hex), and the key epoch it belongs to.
    /// Aggregators forget state of older epochs, so nothing links across a rotation. Fails
    /// closed: without a fresh random key for the epoch there is no pseudonym, and the caller
    /// drops the observation.
    pub fn pseudonym(&self, raw: &[u8], now_ms: i64) -> Result<(String, i64), String> {
        let s = now_ms.div_euclid(1000);
        let mut epoch = self.epoch_of(now_ms);
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(cur) = st.epoch {
            if epoch < cur && s >= st.since_s {
                // Daylight saving turned the local clock back into an epoch already left.
                epoch = cur;
            }
        }
        let aged = self.rotation_s < DAY
            && st.epoch.is_some()
            && s.saturating_sub(st.since_s) >= self.rotation_s;
        let fresh = st.key.is_none() || st.epoch.is_some_and(|cur| cur != epoch) || aged;
        if fresh {
            // The old key is wiped here (Zeroizing), before the new one is drawn.
            st.key = None;
            match (self.source)() {
                Ok(k) => {
                    st.key = Some(k);
                    st.failing = false;
                }
                Err(e) => {
                    st.epoch = Some(epoch.max(st.epoch.unwrap_or(epoch)));
                    if !st.failing {
                        st.failing = true;
                        tracing::error!("{e}; device observations are dropped until it works");
                    }
                    return Err(e);
                }
            }
        }
        if fresh || st.epoch.is_none() {
            st.epoch = Some(epoch);
            st.since_s = s;
        }
        let mac = match st.key.as_ref() {
            Some(k) => HmacSha256::new_from_slice(&k[..]),
            None => return Err("no device key".into()),
        };
        drop(st);
        let mut mac = mac.map_err(|_| "bad device key length".to_string())?;
        mac.update(raw);
        let out = mac.finalize().into_bytes();
        Ok((super::hex(&out[..self.bytes.min(out.len())]), epoch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    const MAC: [u8; 6] = [0x90, 0xa4, 0xde, 0xc0, 0x46, 0x11];

    fn utc_zone(_: i64) -> i64 {
        0
    }

    fn pz(rotation_s: u64, zone: ZoneOffset) -> DevicePseudonymizer {
        match DevicePseudonymizer::with_sources(
            Duration::from_secs(rotation_s),
            8,
            random_key,
            zone,
        ) {
            Ok(p) => p,
            Err(e) => panic!("{e}"),
        }
    }

    fn ps(p: &DevicePseudonymizer, t_ms: i64) -> (String, i64) {
        match p.pseudonym(&MAC, t_ms) {
            Ok(x) => x,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn stable_within_epoch_unlinkable_across() {
        let p = pz(86_400, utc_zone);
        let t = 1_764_000_000_000;
        let (a, e1) = ps(&p, t);
        let (b, e2) = ps(&p, t + 1000);
        assert_eq!((a.clone(), e1), (b, e2));
        assert_eq!(a.len(), 16);
        assert!(!a.contains("90a4dec04611"));
        let (c, e3) = ps(&p, t + 86_400_000);
        assert_ne!(a, c);
        assert_eq!(e3, e1 + 1);
        let q = pz(86_400, utc_zone);
        assert_ne!(ps(&q, t).0, a, "keys are random per process");
    }

    static DRAWS: AtomicU32 = AtomicU32::new(0);

    /// The CSPRNG works for the first key only.
    fn first_key_only() -> Result<DeviceKey, String> {
        if DRAWS.fetch_add(1, Ordering::SeqCst) == 0 {
            random_key()
        } else {
            Err("getrandom: EMFILE".into())
        }
    }

    fn no_key() -> Result<DeviceKey, String> {
        Err("getrandom: ENOSYS".into())
    }

    #[test]
    fn no_random_key_means_no_pseudonym() {
        let p = DevicePseudonymizer::with_sources(Duration::from_secs(86_400), 8, no_key, utc_zone);
        assert!(p.is_err(), "no pseudonymizer without a key");
        let p = match DevicePseudonymizer::with_sources(
            Duration::from_secs(86_400),
            8,
            first_key_only,
            utc_zone,
        ) {
            Ok(p) => p,
            Err(e) => panic!("{e}"),
        };
        let t = 1_764_000_000_000;
        assert!(p.pseudonym(&MAC, t).is_ok());
        // Next day: the rotation cannot draw a key; the old one is gone and nothing is derived
        // from time, pid or the previous key.
        for dt in [86_400_000, 86_400_000 + 1, 2 * 86_400_000] {
            assert!(p.pseudonym(&MAC, t + dt).is_err());
            assert!(!p.holds_key());
        }
    }

    #[test]
    fn expired_key_is_wiped_and_never_reused() {
        let p = pz(86_400, utc_zone);
        let t = 1_764_000_000_000;
        let (a, _) = ps(&p, t);
        assert!(p.holds_key());
        p.expire(t + 3_600_000);
        assert!(p.holds_key(), "same day: the key stays");
        let next = p.next_rotation_ms(t);
        assert_eq!(next % 86_400_000, 0, "UTC zone: the next midnight");
        p.expire(next);
        assert!(!p.holds_key(), "a new day: yesterday's key is wiped");
        // An event stamped before the boundary but arriving after it gets a new key too.
        assert_ne!(ps(&p, next - 1000).0, a);
    }

    #[test]
    fn sub_day_key_never_outlives_the_rotation_when_the_clock_repeats() {
        // A zone that turns the clock back one hour at 01:00 UTC of day 0 (like Europe's
        // October change): local 02:00-03:00 happens twice.
        fn fall_back(s: i64) -> i64 {
            if s < 3600 {
                7200
            } else {
                3600
            }
        }
        let p = pz(3600, fall_back);
        let (a, ea) = ps(&p, 0);
        let (b, eb) = ps(&p, 3_599_000);
        assert_eq!((&a, ea), (&b, eb));
        let (c, ec) = ps(&p, 3_600_000);
        assert_eq!(ec, ea, "same local wall-clock hour");
        assert_ne!(c, a, "but a new key: one hour of use is the limit");
        let (d, ed) = ps(&p, 7_200_000);
        assert!(ed > ec);
        assert_ne!(d, c);
    }

    /// Runs one test of this module in a child process with `TZ` set (the zone is read once per
    /// process); the child's assertions decide.
    fn in_child(test: &str, tz: &str) {
        let exe = match std::env::current_exe() {
            Ok(e) => e,
            Err(e) => panic!("{e}"),
        };
        // Cross-built tests run under an emulator (scripts/cross-build sets the runner): the
        // child must be started through it too, there is no binfmt_misc to do it.
        let runner = std::env::var("STOREGW_TEST_RUNNER").unwrap_or_default();
        let mut words = runner.split_whitespace();
        let mut cmd = match words.next() {
            Some(prog) => {
                let mut c = std::process::Command::new(prog);
                c.args(words).arg(&exe);
                c
            }
            None => std::process::Command::new(&exe),
        };
        let out = cmd
            .args([
                test,
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("TZ", tz)
            .env("STOREGW_PRIVACY_CHILD", "1")
            .output();
        let out = match out {
            Ok(o) => o,
            Err(e) => panic!("{e}"),
        };
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{test} with TZ={tz}:\n{text}");
        assert!(text.contains("1 passed"), "{test} did not run:\n{text}");
    }

    #[test]
    fn rotation_follows_local_midnight_across_dst() {
        for tz in ["Europe/Berlin", "CET-1CEST,M3.5.0,M10.5.0/3"] {
            in_child("privacy::device::tests::child_berlin_midnights", tz);
        }
    }

    #[test]
    #[ignore = "run by rotation_follows_local_midnight_across_dst with TZ set"]
    fn child_berlin_midnights() {
        if std::env::var_os("STOREGW_PRIVACY_CHILD").is_none() {
            return;
        }
        init_local_offset();
        let p = match DevicePseudonymizer::new(Duration::from_secs(86_400), 8) {
            Ok(p) => p,
            Err(e) => panic!("{e}"),
        };
        let h = 3_600_000i64;
        // 2026-03-29: CET (+1) to CEST (+2) at 01:00 UTC; 2026-10-25: back at 01:00 UTC.
        let mar29_midnight = 1_774_738_800_000; // 2026-03-28T23:00Z
        let mar30_midnight = 1_774_821_600_000; // 2026-03-29T22:00Z
        let oct25_midnight = 1_792_879_200_000; // 2026-10-24T22:00Z
        let oct26_midnight = 1_792_969_200_000; // 2026-10-25T23:00Z
        assert_eq!(local_offset_at(mar29_midnight / 1000), 3600);
        assert_eq!(local_offset_at(mar30_midnight / 1000), 7200);
        assert_eq!(p.next_rotation_ms(mar29_midnight - 12 * h), mar29_midnight);
        assert_eq!(p.next_rotation_ms(mar29_midnight + 12 * h), mar30_midnight);
        assert_eq!(p.next_rotation_ms(oct25_midnight - 12 * h), oct25_midnight);
        assert_eq!(p.next_rotation_ms(oct25_midnight + 12 * h), oct26_midnight);
        for (start, end) in [
            (mar29_midnight, mar30_midnight),
            (oct25_midnight, oct26_midnight),
        ] {
            let (before, e0) = ps(&p, start - 1000);
            let (first, e1) = ps(&p, start);
            let (last, e2) = ps(&p, end - 1000);
            let (next, e3) = ps(&p, end);
            assert_ne!(before, first, "key changes at local midnight");
            assert_eq!(
                first, last,
                "one key for the whole local day (23 or 25 hours)"
            );
            assert_ne!(last, next, "and changes at the next local midnight");
            assert_eq!((e1, e2, e3), (e0 + 1, e0 + 1, e0 + 2));
        }
    }

    /// A key drawn while every file descriptor is taken (EMFILE) is still random: getrandom(2)
    /// needs no descriptor and nothing falls back to time or pid.
    #[test]
    fn key_is_random_without_a_free_file_descriptor() {
        in_child("privacy::device::tests::child_emfile", "UTC");
    }

    #[test]
    #[ignore = "run by key_is_random_without_a_free_file_descriptor"]
    fn child_emfile() {
        if std::env::var_os("STOREGW_PRIVACY_CHILD").is_none() {
            return;
        }
        let lim = libc::rlimit {
            rlim_cur: 64,
            rlim_max: 64,
        };
        // SAFETY: setrlimit reads `lim`; lowering the limit of this child process only.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
        let mut hold = Vec::new();
        while let Ok(f) = std::fs::File::open("/dev/null") {
            hold.push(f);
            assert!(hold.len() < 100_000);
        }
        assert!(
            std::fs::File::open("/dev/urandom").is_err(),
            "no descriptor left"
        );
        let (a, b) = match (random_key(), random_key()) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => panic!("{e}"),
        };
        assert_ne!(a[..], b[..]);
        assert_ne!(a[..], [0u8; 32][..]);
        let p = pz(86_400, utc_zone);
        let q = pz(86_400, utc_zone);
        let t = 1_764_000_000_000;
        assert_ne!(
            ps(&p, t).0,
            ps(&q, t).0,
            "same time, same pid, different keys"
        );
        drop(hold);
    }
}
