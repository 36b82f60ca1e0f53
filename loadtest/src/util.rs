//! Random identifiers in AWS shapes, and fast UTC time formatting.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// The generator's RNG: ChaCha8 is portable (same seed, same stream on every
/// platform and rand version) and fast.
pub type Rand = ChaCha8Rng;

const HEX: &[u8; 16] = b"0123456789abcdef";
const UPPER_ALNUM: &[u8; 36] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
const LOWER_ALNUM: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// A random version-4 UUID, lower case.
pub fn uuid(rng: &mut Rand) -> String {
    let mut b: [u8; 16] = rng.random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    uuid_from(b)
}

/// A UUID-shaped string from 16 bytes (no version bits forced).
pub fn uuid_from(b: [u8; 16]) -> String {
    let mut s = String::with_capacity(36);
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push(HEX[(byte >> 4) as usize] as char);
        s.push(HEX[(byte & 0xf) as usize] as char);
    }
    s
}

/// A deterministic UUID-shaped id derived from a string (for ids that must
/// not consume the RNG, e.g. the EventBridge envelope of a CloudTrail record).
pub fn derived_uuid(seed: &str, salt: u64) -> String {
    let a = mix(fnv(seed.as_bytes()) ^ salt);
    let b = mix(a ^ 0x9e37_79b9_7f4a_7c15);
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&a.to_be_bytes());
    bytes[8..].copy_from_slice(&b.to_be_bytes());
    uuid_from(bytes)
}

/// FNV-1a, 64 bit.
pub fn fnv(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for x in b {
        h ^= u64::from(*x);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// splitmix64 finaliser.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

pub fn hex(rng: &mut Rand, n: usize) -> String {
    (0..n).map(|_| HEX[rng.random_range(0..16)] as char).collect()
}

pub fn upper_alnum(rng: &mut Rand, n: usize) -> String {
    (0..n).map(|_| UPPER_ALNUM[rng.random_range(0..36)] as char).collect()
}

pub fn lower_alnum(rng: &mut Rand, n: usize) -> String {
    (0..n).map(|_| LOWER_ALNUM[rng.random_range(0..36)] as char).collect()
}

/// A 12-digit account id (no leading zero, so it never looks truncated).
pub fn account_id(rng: &mut Rand) -> String {
    format!("{}{:011}", rng.random_range(1..10), rng.random_range(0..100_000_000_000u64))
}

/// An IAM unique id: `AROA`, `AIDA`, `AKIA`, `ASIA` + 16 characters.
pub fn iam_id(rng: &mut Rand, prefix: &str) -> String {
    format!("{prefix}{}", upper_alnum(rng, 16))
}

/// `sha256:` + 64 hex digits.
pub fn digest(rng: &mut Rand) -> String {
    format!("sha256:{}", hex(rng, 64))
}

/// An EC2 instance id.
pub fn instance_id(rng: &mut Rand) -> String {
    format!("i-0{}", hex(rng, 16))
}

/// A public IPv4 address outside private, loopback, multicast and reserved space.
pub fn public_ip(rng: &mut Rand) -> String {
    loop {
        let a: u8 = rng.random_range(1..224);
        let b: u8 = rng.random();
        let private = a == 10
            || a == 127
            || a == 0
            || (a == 172 && (16..32).contains(&b))
            || (a == 192 && b == 168)
            || (a == 169 && b == 254)
            || (a == 100 && (64..128).contains(&b));
        if !private {
            return format!("{a}.{b}.{}.{}", rng.random::<u8>(), rng.random_range(1..255u8));
        }
    }
}

/// Broken-down UTC time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Civil {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
}

impl Civil {
    /// From Unix seconds (days-from-civil inverse, proleptic Gregorian).
    pub fn from_unix(t: i64) -> Civil {
        let days = t.div_euclid(86_400);
        let secs = t.rem_euclid(86_400);
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = yoe + era * 400 + i64::from(month <= 2);
        Civil {
            year,
            month,
            day,
            hour: (secs / 3600) as u32,
            minute: ((secs % 3600) / 60) as u32,
            second: (secs % 60) as u32,
        }
    }
}

/// `2026-11-02T08:15:00Z`, as CloudTrail writes eventTime.
pub fn iso(t: i64) -> String {
    let c = Civil::from_unix(t);
    format!("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z", c.year, c.month, c.day, c.hour, c.minute, c.second)
}

/// `20261102T0815Z`, as in CloudTrail log file names.
pub fn compact(t: i64) -> String {
    let c = Civil::from_unix(t);
    format!("{:04}{:02}{:02}T{:02}{:02}Z", c.year, c.month, c.day, c.hour, c.minute)
}

/// `Nov 2, 2026, 8:15:00 AM`, the time format inside Inspector2 findings.
pub fn inspector_time(t: i64) -> String {
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let c = Civil::from_unix(t);
    let (h12, ampm) = match c.hour {
        0 => (12, "AM"),
        1..=11 => (c.hour, "AM"),
        12 => (12, "PM"),
        _ => (c.hour - 12, "PM"),
    };
    format!(
        "{} {}, {}, {}:{:02}:{:02} {}",
        MONTHS[(c.month - 1) as usize],
        c.day,
        c.year,
        h12,
        c.minute,
        c.second,
        ampm
    )
}

/// Parses RFC 3339 into Unix seconds.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok().map(|t| t.unix_timestamp())
}

/// Parses `90s`, `15m`, `2h`, `1d` or plain seconds.
pub fn parse_duration(s: &str) -> Option<i64> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: i64 = num.parse().ok()?;
    let mul = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    n.checked_mul(mul)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn civil_matches_the_time_crate() {
        for t in [0i64, 951_782_400, 1_700_000_000, 1_793_577_600, 4_102_444_799, -86_400] {
            let ours = iso(t);
            let theirs = time::OffsetDateTime::from_unix_timestamp(t)
                .unwrap()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap();
            assert_eq!(ours, theirs, "t={t}");
            assert_eq!(parse_rfc3339(&ours), Some(t));
        }
        assert_eq!(compact(1_793_577_600 + 8 * 3600 + 15 * 60), "20261102T0815Z");
        assert_eq!(inspector_time(1_793_577_600 + 18 * 3600 + 2 * 60 + 30), "Nov 2, 2026, 6:02:30 PM");
    }

    #[test]
    fn ids_have_aws_shapes() {
        let mut r = Rand::seed_from_u64(1);
        let u = uuid(&mut r);
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert_eq!(account_id(&mut r).len(), 12);
        assert!(iam_id(&mut r, "AKIA").starts_with("AKIA"));
        assert_eq!(digest(&mut r).len(), 71);
        for _ in 0..1000 {
            let ip = public_ip(&mut r);
            assert!(!ip.starts_with("10.") && !ip.starts_with("192.168."), "{ip}");
        }
        assert_eq!(derived_uuid("x", 1), derived_uuid("x", 1));
        assert_ne!(derived_uuid("x", 1), derived_uuid("x", 2));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Some(90));
        assert_eq!(parse_duration("15m"), Some(900));
        assert_eq!(parse_duration("24h"), Some(86_400));
        assert_eq!(parse_duration("2d"), Some(172_800));
        assert_eq!(parse_duration("x"), None);
        assert_eq!(parse_duration("5w"), None);
    }
}
