//! Sizes as recipes write them: `4294967296`, `"4294967296"`, `"512MiB"`, `"4 GiB"`.

pub const KIB: u64 = 1024;
pub const MIB: u64 = 1024 * KIB;
pub const GIB: u64 = 1024 * MIB;
pub const TIB: u64 = 1024 * GIB;

/// What [`parse_size`] accepts, for error messages.
pub const SIZE_EXPECTED: &str =
    "a size in bytes (an integer) or a string like \"512MiB\" (units: KiB, MiB, GiB, TiB)";

/// Parses a size string: a decimal number of bytes, optionally followed by a binary unit.
/// Only binary units are accepted, so that "G" never silently means 10^9.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(format!("size {s:?} does not start with a number"));
    }
    let (num, unit) = t.split_at(digits);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("size {s:?} is too large"))?;
    let mult = match unit.trim_start() {
        "" | "B" => 1,
        "KiB" => KIB,
        "MiB" => MIB,
        "GiB" => GIB,
        "TiB" => TIB,
        other => return Err(format!("size {s:?} has an unknown unit {other:?}")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

/// `n` rounded up to a multiple of `to` (a power of two), or `None` on overflow.
pub fn round_up(n: u64, to: u64) -> Option<u64> {
    n.checked_add(to - 1).map(|v| v & !(to - 1))
}

/// Human-readable size for messages: exact bytes, plus MiB/GiB when it divides evenly.
pub fn show_size(n: u64) -> String {
    for (unit, name) in [(TIB, "TiB"), (GIB, "GiB"), (MIB, "MiB"), (KIB, "KiB")] {
        if n >= unit && n % unit == 0 {
            return format!("{} {name}", n / unit);
        }
    }
    format!("{n} bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4GiB"), Ok(4 * GIB));
        assert_eq!(parse_size("4 GiB"), Ok(4 * GIB));
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("1TiB"), Ok(TIB));
        assert!(parse_size("4GB").is_err());
        assert!(parse_size("GiB").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("99999999999999999999").is_err());
        assert!(parse_size("17179869184GiB").is_err());
        assert_eq!(show_size(3 * MIB), "3 MiB");
        assert_eq!(show_size(1000), "1000 bytes");
        assert_eq!(round_up(1, MIB), Some(MIB));
        assert_eq!(round_up(u64::MAX, MIB), None);
    }
}
