//! Transaction times as the sources write them: RFC 3339 with an offset, or naive local
//! date-times (POSLog `EndDateTime`, UCI `InvoiceDate`) read with the configured store offset.

/// Parses `YYYY-MM-DD[T ]HH:MM[:SS[.fff]][Z|±HH:MM]` or `M/D/YYYY H:MM[:SS]` into Unix ms.
/// `naive_offset_s` applies when the text carries no offset.
pub fn parse(text: &str, naive_offset_s: i32) -> Result<i64, String> {
    let t = text.trim();
    match strict_rfc3339(t) {
        Some(ms) => Ok(ms),
        None => general(t, naive_offset_s),
    }
}

/// Every form [`parse`] reads, piece by piece (`t` trimmed).
fn general(t: &str, naive_offset_s: i32) -> Result<i64, String> {
    let err = || {
        "not a date-time (expected RFC 3339, YYYY-MM-DD HH:MM[:SS] or M/D/YYYY H:MM)".to_string()
    };
    let (date, rest) = if t.contains('/') {
        let (d, r) = t.split_once(' ').unwrap_or((t, ""));
        let mut it = d.split('/');
        let m: u8 = num(it.next()).ok_or_else(err)?;
        let day: u8 = num(it.next()).ok_or_else(err)?;
        let y: i32 = num(it.next()).ok_or_else(err)?;
        ((y, m, day), r)
    } else {
        let d = t.get(..10).ok_or_else(err)?;
        let mut it = d.split('-');
        let y: i32 = num(it.next()).ok_or_else(err)?;
        let m: u8 = num(it.next()).ok_or_else(err)?;
        let day: u8 = num(it.next()).ok_or_else(err)?;
        ((y, m, day), t.get(11..).unwrap_or(""))
    };
    let month = time::Month::try_from(date.1).map_err(|_| err())?;
    let d = time::Date::from_calendar_date(date.0, month, date.2).map_err(|_| err())?;
    // Split the time from the offset.
    let (clock, offset_s) = split_offset(rest).ok_or_else(err)?;
    let mut hms = clock.split(':');
    let h: u8 = if clock.is_empty() {
        0
    } else {
        num(hms.next()).ok_or_else(err)?
    };
    let mi: u8 = match hms.next() {
        Some(x) => num(Some(x)).ok_or_else(err)?,
        None => 0,
    };
    let (s, ms) = match hms.next() {
        Some(x) => {
            let (sec, frac) = x.split_once('.').unwrap_or((x, ""));
            let s: u8 = num(Some(sec)).ok_or_else(err)?;
            let mut ms = 0u32;
            for (i, c) in frac.chars().take(3).enumerate() {
                let dgt = c.to_digit(10).ok_or_else(err)?;
                ms += dgt * 10u32.pow(2 - i as u32);
            }
            (s, ms)
        }
        None => (0, 0),
    };
    let tm = time::Time::from_hms_milli(h, mi, s, ms as u16).map_err(|_| err())?;
    let odt = time::PrimitiveDateTime::new(d, tm).assume_utc();
    let off = offset_s.unwrap_or(naive_offset_s);
    Ok(odt.unix_timestamp() * 1000 + i64::from(ms) - i64::from(off) * 1000)
}

/// `YYYY-MM-DDTHH:MM:SS[.f…](Z|±HH:MM)`, the form nearly every source sends, read by position
/// (the general reader below splits and parses each piece, several times the work for every
/// transaction). Anything else, or an invalid date or time, is `None` and left to the general
/// reader, which gives the same value for everything this accepts (tested on random stamps).
fn strict_rfc3339(t: &str) -> Option<i64> {
    let b = t.as_bytes();
    let digit = |i: usize| {
        b.get(i)
            .filter(|c| c.is_ascii_digit())
            .map(|c| u32::from(c - b'0'))
    };
    let two = |i: usize| Some(digit(i)? * 10 + digit(i + 1)?);
    let at = |i: usize, c: &[u8]| b.get(i).is_some_and(|x| c.contains(x));
    if !(at(4, b"-") && at(7, b"-") && at(10, b"Tt ") && at(13, b":") && at(16, b":")) {
        return None;
    }
    let year = two(0)? * 100 + two(2)?;
    let (month, day) = (two(5)?, two(8)?);
    let (h, mi, s) = (two(11)?, two(14)?, two(17)?);
    let mut i = 19;
    let mut ms = 0u32;
    if at(i, b".") {
        i += 1;
        let start = i;
        while let Some(d) = digit(i) {
            if i - start < 3 {
                ms += d * 10u32.pow(2 - (i - start) as u32);
            }
            i += 1;
        }
        if i == start {
            return None;
        }
    }
    let offset_s: i64 = match b.get(i..)? {
        b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (oh, om) = (i64::from(two(i + 1)?), i64::from(two(i + 4)?));
            if oh > 18 || om > 59 {
                return None;
            }
            let v = oh * 3600 + om * 60;
            if *sign == b'-' {
                -v
            } else {
                v
            }
        }
        _ => return None,
    };
    let month = time::Month::try_from(u8::try_from(month).ok()?).ok()?;
    let date =
        time::Date::from_calendar_date(i32::try_from(year).ok()?, month, u8::try_from(day).ok()?)
            .ok()?;
    let clock = time::Time::from_hms_milli(
        u8::try_from(h).ok()?,
        u8::try_from(mi).ok()?,
        u8::try_from(s).ok()?,
        u16::try_from(ms).ok()?,
    )
    .ok()?;
    let utc = time::PrimitiveDateTime::new(date, clock).assume_utc();
    Some(utc.unix_timestamp() * 1000 + i64::from(ms) - offset_s * 1000)
}

fn num<T: std::str::FromStr>(s: Option<&str>) -> Option<T> {
    let s = s?.trim();
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Separates `HH:MM:SS.fff` from a trailing `Z` or `±HH:MM`.
fn split_offset(rest: &str) -> Option<(&str, Option<i32>)> {
    if let Some(c) = rest.strip_suffix('Z').or_else(|| rest.strip_suffix('z')) {
        return Some((c, Some(0)));
    }
    if let Some(p) = rest.rfind(['+', '-']) {
        let (c, off) = rest.split_at(p);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let body = off.get(1..)?;
        let (oh, om) = match body.split_once(':') {
            Some((a, b)) => (a, b),
            None => (body.get(..2)?, body.get(2..).unwrap_or("0")),
        };
        // Real offsets are within ±18:00; anything else is not a time (and cannot overflow).
        let oh: i32 = num(Some(oh)).filter(|h| *h <= 18)?;
        let om: i32 = num(Some(if om.is_empty() { "0" } else { om })).filter(|m| *m < 60)?;
        return Some((c, Some(sign * (oh * 3600 + om * 60))));
    }
    Some((rest, None))
}

/// Parses a config offset like `+01:00`, `-05:00` or `Z` into seconds.
pub fn parse_offset(s: &str) -> Result<i32, String> {
    match split_offset(s.trim()) {
        Some(("", Some(o))) if o.abs() <= 14 * 3600 => Ok(o),
        _ => Err(format!("`{s}` is not a UTC offset like +01:00")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The strict reader gives the general reader's value for every stamp it takes: random
    /// stamps, well formed and damaged (a character replaced, cut or added).
    #[test]
    fn strict_stamps_read_as_the_general_reader_reads_them() {
        let mut rng = fastrand::Rng::with_seed(17);
        let mut taken = 0;
        for _ in 0..50_000 {
            let frac = match rng.u8(..4) {
                0 => String::new(),
                1 => format!(".{}", rng.u32(0..10)),
                2 => format!(".{:03}", rng.u32(0..1000)),
                _ => format!(".{:09}", rng.u32(0..1_000_000_000)),
            };
            let off = match rng.u8(..4) {
                0 => "Z".to_string(),
                1 => "z".to_string(),
                _ => format!(
                    "{}{:02}:{:02}",
                    if rng.bool() { '+' } else { '-' },
                    rng.u32(0..20),
                    rng.u32(0..61)
                ),
            };
            let mut stamp = format!(
                "{:04}-{:02}-{:02}{}{:02}:{:02}:{:02}{frac}{off}",
                rng.u32(0..10_000),
                rng.u32(0..14),
                rng.u32(0..33),
                ['T', 't', ' '][rng.usize(..3)],
                rng.u32(0..25),
                rng.u32(0..61),
                rng.u32(0..61),
            );
            if rng.u8(..3) == 0 && !stamp.is_empty() {
                let at = rng.usize(..stamp.len());
                match rng.u8(..3) {
                    0 => stamp.truncate(at),
                    1 => stamp.insert(at, ['1', ':', '-', 'x', '.'][rng.usize(..5)]),
                    _ => stamp.replace_range(at..=at, ["9", ":", "+", "a", " "][rng.usize(..5)]),
                }
            }
            if let Some(ms) = strict_rfc3339(&stamp) {
                taken += 1;
                assert_eq!(parse(&stamp, 0), Ok(ms), "{stamp}");
                assert_eq!(general(&stamp, 0), Ok(ms), "{stamp}");
            }
        }
        assert!(taken > 10_000, "only {taken} taken");
    }

    #[test]
    fn formats() {
        assert_eq!(parse("2020-01-17T20:47:53.293Z", 0), Ok(1579294073293));
        assert_eq!(
            parse("2008-01-10T11:00:00-05:00", 0),
            parse("2008-01-10T16:00:00Z", 0)
        );
        assert_eq!(parse("2017-10-01T02:01:31", 0), Ok(1506823291000));
        assert_eq!(
            parse("2010-12-22 10:29:00", 3600),
            parse("2010-12-22T09:29:00Z", 0)
        );
        assert_eq!(parse("12/1/2010 8:26", 0), parse("2010-12-01T08:26:00Z", 0));
        assert!(parse("yesterday", 0).is_err());
        assert!(parse("2010-13-01", 0).is_err());
        assert_eq!(parse_offset("+01:00"), Ok(3600));
        assert_eq!(parse_offset("Z"), Ok(0));
        assert!(parse_offset("1h").is_err());
        for bad in [
            "2024-03-01T10:00:00+99999999:00",
            "2024-03-01T10:00:00-2147483648:00",
            "2024-03-01T10:00:00+19:00",
            "2024-03-01T10:00:00+01:99",
        ] {
            assert!(parse(bad, 0).is_err(), "{bad}");
        }
    }
}
