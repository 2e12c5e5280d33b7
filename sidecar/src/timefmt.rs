//! Query-string times: Unix milliseconds or RFC 3339 (`2026-11-22T04:00:00Z`,
//! `2026-11-22T09:30:00.250+05:30`). Small enough not to need a date crate.

/// Parses either form into Unix milliseconds; `None` on anything else.
pub fn parse_time_ms(s: &str) -> Option<u64> {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().ok();
    }
    parse_rfc3339_ms(s)
}

fn num(s: &str, range: std::ops::RangeInclusive<i64>) -> Option<i64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let v: i64 = s.parse().ok()?;
    range.contains(&v).then_some(v)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

fn parse_rfc3339_ms(s: &str) -> Option<u64> {
    let s = s.as_bytes();
    // "YYYY-MM-DDTHH:MM:SS" is 19 bytes; everything after is fraction and offset.
    if s.len() < 20 || s[4] != b'-' || s[7] != b'-' || s[13] != b':' || s[16] != b':' {
        return None;
    }
    if !matches!(s[10], b'T' | b't' | b' ') {
        return None;
    }
    let text = std::str::from_utf8(s).ok()?;
    let y = num(text.get(0..4)?, 1970..=9999)?;
    let mo = num(text.get(5..7)?, 1..=12)?;
    let d = num(text.get(8..10)?, 1..=days_in_month(y, mo))?;
    let h = num(text.get(11..13)?, 0..=23)?;
    let mi = num(text.get(14..16)?, 0..=59)?;
    let sec = num(text.get(17..19)?, 0..=60)?;
    let mut rest = text.get(19..)?;
    let mut millis = 0i64;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let first3 = frac.get(..digits.min(3))?;
        millis = num(first3, 0..=999)? * 10i64.pow(3 - first3.len() as u32);
        rest = frac.get(digits..)?;
    }
    let offset_s = match rest {
        "Z" | "z" => 0,
        _ => {
            let (sign, hm) = match rest.as_bytes().first()? {
                b'+' => (1, rest.get(1..)?),
                b'-' => (-1, rest.get(1..)?),
                _ => return None,
            };
            let (oh, om) = hm.split_once(':')?;
            sign * (num(oh, 0..=23)? * 3600 + num(om, 0..=59)? * 60)
        }
    };
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec - offset_s;
    u64::try_from(secs * 1000 + millis).ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn parses_millis_and_rfc3339() {
        assert_eq!(parse_time_ms("0"), Some(0));
        assert_eq!(parse_time_ms("1763784000000"), Some(1_763_784_000_000));
        // date -u -d 2025-11-22T04:00:00Z +%s -> 1763784000
        assert_eq!(
            parse_time_ms("2025-11-22T04:00:00Z"),
            Some(1_763_784_000_000)
        );
        assert_eq!(
            parse_time_ms("2025-11-22T09:30:00.25+05:30"),
            Some(1_763_784_000_250)
        );
        assert_eq!(
            parse_time_ms("2024-02-29T00:00:00Z"),
            Some(1_709_164_800_000)
        );
        assert_eq!(parse_time_ms("1970-01-01T00:00:00Z"), Some(0));
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "-5",
            "yesterday",
            "2025-02-29T00:00:00Z",
            "2025-11-22T04:00:00",
            "2025-11-22T24:00:00Z",
            "2025-11-22T04:00:00.Z",
            "2025-11-22T04:00:00+0530",
        ] {
            assert_eq!(parse_time_ms(bad), None, "{bad}");
        }
    }
}
