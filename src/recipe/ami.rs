//! `[ami]`: how `kiln register` turns a snapshot of the image into an AMI.
//!
//! `name` may hold placeholders, expanded when the recipe is loaded:
//! `{name}` and `{version}` (from `[image]`), `{arch}` (`x86_64` or `arm64`, as EC2 names it),
//! and `{date}` (the UTC day of `source_date_epoch` as `YYYYMMDD`, so it is reproducible).
//! RegisterImage reference: <https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_RegisterImage.html>.
//!
//! `kiln publish` also reads the sharing and deprecation keys: `share_accounts` (12-digit
//! account ids), `share_organizations` / `share_organizational_units` (ARNs, in the shape
//! ModifyImageAttribute documents), `public` (only with `--allow-public`), and one of
//! `deprecate_after` (`"365d"`; units `m`, `h`, `d`, `w`) or `deprecate_at` (RFC 3339 UTC,
//! `"2027-12-31T00:00:00Z"`).

use super::error::{RecipeError, RecipeErrorKind as K};
use super::parse::Ctx;
use super::raw::{RawAmi, S};
use super::size::GIB;
use super::{Arch, Image, Pos};
use toml::Spanned;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootMode {
    Uefi,
    UefiPreferred,
    LegacyBios,
}

impl BootMode {
    /// The value EC2 wants.
    pub fn as_str(self) -> &'static str {
        match self {
            BootMode::Uefi => "uefi",
            BootMode::UefiPreferred => "uefi-preferred",
            BootMode::LegacyBios => "legacy-bios",
        }
    }
}

/// An extra EBS volume in the AMI's block device mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmiVolume {
    pub device_name: String,
    /// Whole GiB.
    pub size_gib: i32,
    pub volume_type: String,
    pub delete_on_termination: bool,
}

/// `[ami]`, validated, with defaults filled in and the name expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ami {
    pub name: String,
    pub description: Option<String>,
    pub boot_mode: BootMode,
    pub ena_support: bool,
    pub sriov_net_support: String,
    pub imds_support: Option<String>,
    pub tpm_support: Option<String>,
    pub uefi_data: Option<String>,
    pub root_device_name: String,
    pub volume_type: String,
    pub iops: Option<i32>,
    pub throughput: Option<i32>,
    /// The root volume's size at launch, whole GiB (at least the snapshot's size).
    pub volume_size_gib: i32,
    pub delete_on_termination: bool,
    /// The first is where the snapshot is made; empty means the region kiln connects to.
    pub regions: Vec<String>,
    pub encrypted: bool,
    pub kms_key_arn: Option<String>,
    /// Sorted by key.
    pub tags: Vec<(String, String)>,
    pub volumes: Vec<AmiVolume>,
    /// Who may launch the image besides its owner.
    pub shares: Shares,
    /// Where `public = true` is written (`kiln publish` refuses it without `--allow-public`).
    pub public_pos: Option<Pos>,
    pub deprecation: Option<Deprecation>,
    pub pos: Pos,
}

/// Launch permissions beyond the owner, in recipe order without duplicates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Shares {
    /// 12-digit AWS account ids.
    pub accounts: Vec<String>,
    /// `arn:aws:organizations::ACCOUNT:organization/o-…`
    pub organizations: Vec<String>,
    /// `arn:aws:organizations::ACCOUNT:ou/o-…/ou-…`
    pub organizational_units: Vec<String>,
    /// Launchable by every AWS account.
    pub public: bool,
}

impl Shares {
    pub fn is_empty(&self) -> bool {
        self.accounts.is_empty()
            && self.organizations.is_empty()
            && self.organizational_units.is_empty()
            && !self.public
    }
}

/// When EC2 deprecates the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deprecation {
    /// Seconds after the image's creation, as EC2 reports it for the image kiln registered (so
    /// every region and every re-publish of the same image get the same time).
    After(i64),
    /// A fixed time, seconds since 1970 (UTC).
    At(i64),
}

/// EnableImageDeprecation's upper limit: 10 years from now (2 years after creation for public
/// images).
pub const MAX_DEPRECATION_SECS: i64 = 3650 * 86_400;
pub const MAX_PUBLIC_DEPRECATION_SECS: i64 = 730 * 86_400;

/// `"365d"`: a whole number and one of `m`, `h`, `d`, `w`, in seconds.
pub fn parse_duration(s: &str) -> Result<i64, String> {
    let s = s.trim();
    let unit = s.chars().last().ok_or("an empty duration")?;
    let mult = match unit {
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        'w' => 7 * 86_400,
        _ => return Err(format!("{s:?} has no unit")),
    };
    let n: i64 = s[..s.len() - 1]
        .parse()
        .map_err(|_| format!("{s:?} is not a whole number and a unit"))?;
    if n <= 0 {
        return Err(format!("{s:?} is not a positive duration"));
    }
    n.checked_mul(mult)
        .filter(|&v| v <= MAX_DEPRECATION_SECS)
        .ok_or_else(|| format!("{s:?} is longer than the 10 years EC2 allows"))
}

/// `"2027-12-31T00:00:00Z"` (fractional seconds accepted, as EC2 answers them) in seconds since
/// 1970. Only UTC (`Z`): EC2 takes and reports deprecation times in UTC.
pub fn parse_utc(s: &str) -> Result<i64, String> {
    let bad = || format!("{s:?} is not a UTC time like \"2027-12-31T00:00:00Z\"");
    let b = s.as_bytes();
    if b.len() < 20 || !s.ends_with('Z') || !s.is_ascii() {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| -> Result<i64, String> {
        let t = &s[r];
        if t.bytes().all(|c| c.is_ascii_digit()) {
            t.parse().map_err(|_| bad())
        } else {
            Err(bad())
        }
    };
    let seps = [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')];
    if seps.iter().any(|&(i, c)| b[i] != c) {
        return Err(bad());
    }
    let frac = &s[19..s.len() - 1];
    if !(frac.is_empty()
        || (frac.len() > 1
            && frac.starts_with('.')
            && frac[1..].bytes().all(|c| c.is_ascii_digit())))
    {
        return Err(bad());
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let mdays = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&mo)
        || d < 1
        || d > mdays[(mo - 1) as usize]
        || h > 23
        || mi > 59
        || se > 59
    {
        return Err(bad());
    }
    Ok(crate::util::days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + se)
}

/// Seconds since 1970 as `"2027-12-31T00:00:00Z"`.
pub fn format_utc(secs: i64) -> String {
    let c = crate::util::civil(secs);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        c.year, c.month, c.day, c.hour, c.min, c.sec
    )
}

/// An AWS account id: exactly 12 digits.
pub fn valid_account(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|c| c.is_ascii_digit())
}

/// The pattern ModifyImageAttribute documents for an organization:
/// `arn:aws[^:]*:organizations::[0-9]{12}:organization/o-[a-z0-9]{10,32}`.
pub fn valid_organization_arn(s: &str) -> bool {
    org_arn_resource(s)
        .and_then(|r| r.strip_prefix("organization/o-"))
        .is_some_and(|id| lower_alnum(id, 10, 32))
}

/// The pattern for an organizational unit:
/// `arn:aws[^:]*:organizations::[0-9]{12}:ou/o-[a-z0-9]{10,32}/ou-[0-9a-z]{4,32}-[0-9a-z]{8,32}`.
pub fn valid_ou_arn(s: &str) -> bool {
    let Some(rest) = org_arn_resource(s).and_then(|r| r.strip_prefix("ou/o-")) else {
        return false;
    };
    let Some((org, ou)) = rest.split_once('/') else {
        return false;
    };
    let Some((root, id)) = ou.strip_prefix("ou-").and_then(|o| o.split_once('-')) else {
        return false;
    };
    lower_alnum(org, 10, 32) && lower_alnum(root, 4, 32) && lower_alnum(id, 8, 32)
}

fn org_arn_resource(s: &str) -> Option<&str> {
    let p: Vec<&str> = s.splitn(6, ':').collect();
    let ok = p.len() == 6
        && p[0] == "arn"
        && p[1].starts_with("aws")
        && p[2] == "organizations"
        && p[3].is_empty()
        && valid_account(p[4]);
    ok.then_some(p[5])
}

fn lower_alnum(s: &str, min: usize, max: usize) -> bool {
    (min..=max).contains(&s.len())
        && s.bytes()
            .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase())
}

impl Arch {
    /// The architecture as EC2 names it.
    pub fn ec2_name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "arm64",
        }
    }
}

const VOLUME_TYPES: [&str; 7] = ["gp3", "gp2", "io1", "io2", "st1", "sc1", "standard"];

/// `YYYYMMDD` of the UTC day holding `epoch`.
pub fn date_yyyymmdd(epoch: i64) -> String {
    let c = crate::util::civil(epoch);
    format!("{:04}{:02}{:02}", c.year, c.month, c.day)
}

/// Expands `{name}`, `{version}`, `{arch}`, `{date}`; `Err(placeholder)` for any other.
pub fn expand_name(template: &str, image: &Image) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let Some(j) = after.find('}') else {
            return Err(rest[i..].to_string());
        };
        match &after[..j] {
            "name" => out.push_str(&image.name),
            "version" => out.push_str(&image.version),
            "arch" => out.push_str(image.arch.ec2_name()),
            "date" => out.push_str(&date_yyyymmdd(image.source_date_epoch)),
            other => return Err(format!("{{{other}}}")),
        }
        rest = &after[j + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

impl Ctx<'_> {
    fn opt_s(&self, v: &Option<S>) -> Result<Option<String>, RecipeError> {
        v.as_ref().map(|s| self.s(s)).transpose()
    }

    /// A string that must be one of `allowed`.
    fn one_of(
        &self,
        v: &Option<S>,
        allowed: &[&str],
        default: Option<&str>,
        what: &str,
    ) -> Result<Option<String>, RecipeError> {
        let Some(v) = v else {
            return Ok(default.map(str::to_string));
        };
        let s = self.s(v)?;
        if !allowed.contains(&s.as_str()) {
            let exp = allowed
                .iter()
                .map(|a| format!("{a:?}"))
                .collect::<Vec<_>>()
                .join(" or ");
            return Err(self.err(v, K::Value, format!("unknown {what} {s:?}"), exp));
        }
        Ok(Some(s))
    }

    fn gib(&self, v: &Spanned<super::raw::Scalar>, what: &str) -> Result<u64, RecipeError> {
        let n = self.size(v, what)?;
        if n % GIB != 0 || n / GIB > 65536 {
            return Err(self.err(
                v,
                K::Value,
                format!("{what} {n} is not a whole number of GiB up to 64 TiB"),
                "a size like \"8GiB\"",
            ));
        }
        Ok(n / GIB)
    }

    fn positive_i32(
        &self,
        v: &Option<Spanned<i64>>,
        what: &str,
    ) -> Result<Option<i32>, RecipeError> {
        let Some(v) = v else { return Ok(None) };
        match i32::try_from(*v.get_ref()) {
            Ok(n) if n > 0 => Ok(Some(n)),
            _ => Err(self.err(
                v,
                K::Value,
                format!("{what} {} is out of range", v.get_ref()),
                "a positive whole number",
            )),
        }
    }

    /// A list of strings that must each pass `valid`; duplicates dropped, order kept.
    fn list(
        &self,
        v: &Option<Vec<S>>,
        valid: fn(&str) -> bool,
        what: &str,
        expected: &str,
    ) -> Result<Vec<String>, RecipeError> {
        let mut out: Vec<String> = Vec::new();
        for item in v.iter().flatten() {
            let s = self.s(item)?;
            if !valid(&s) {
                return Err(self.err(
                    item,
                    K::Value,
                    format!("{s:?} in {what} is malformed"),
                    expected,
                ));
            }
            if !out.contains(&s) {
                out.push(s);
            }
        }
        Ok(out)
    }

    fn deprecation(&self, r: &RawAmi, public: bool) -> Result<Option<Deprecation>, RecipeError> {
        match (&r.deprecate_after, &r.deprecate_at) {
            (Some(_), Some(at)) => Err(self.err(
                at,
                K::Value,
                "deprecate_at and deprecate_after are both set",
                "only one of them",
            )),
            (Some(after), None) => {
                let secs = parse_duration(&self.s(after)?).map_err(|e| {
                    self.err(
                        after,
                        K::Value,
                        e,
                        "a duration like \"365d\" (units m, h, d, w) of at most 10 years",
                    )
                })?;
                if public && secs > MAX_PUBLIC_DEPRECATION_SECS {
                    return Err(self.err(
                        after,
                        K::Value,
                        "a public AMI may be deprecated at most 2 years after its creation",
                        "at most \"730d\"",
                    ));
                }
                Ok(Some(Deprecation::After(secs)))
            }
            (None, Some(at)) => {
                let secs = parse_utc(&self.s(at)?).map_err(|e| {
                    self.err(
                        at,
                        K::Value,
                        e,
                        "an RFC 3339 UTC time like \"2027-12-31T00:00:00Z\"",
                    )
                })?;
                Ok(Some(Deprecation::At(secs)))
            }
            (None, None) => Ok(None),
        }
    }

    /// `[ami.tags]`: kiln finds its images by its own `kiln:*` tags (refusing any image without
    /// them), so a recipe may not set or forge one; `aws:*` is reserved by AWS, which refuses
    /// it; keys are 1-128 characters and values at most 256 (EC2 CreateTags). `value_at` is the
    /// value's offset; the error points at the key written on that line when it is found there.
    fn check_tag(&self, key: &str, value: &str, value_at: usize) -> Result<(), RecipeError> {
        let line_start = self.text()[..value_at].rfind('\n').map_or(0, |i| i + 1);
        let at = self.text()[line_start..value_at]
            .find(key)
            .map_or(value_at, |i| line_start + i);
        let lower = key.to_ascii_lowercase();
        let problem = if lower.starts_with("kiln:") {
            format!("tag {key:?} is in kiln's own namespace (kiln:*), which kiln sets itself to recognise its images")
        } else if lower.starts_with("aws:") {
            format!("tag {key:?} is in the aws:* namespace, which AWS reserves")
        } else if key.is_empty() || key.chars().count() > 128 {
            format!("tag key {key:?} is not 1 to 128 characters long")
        } else if value.chars().count() > 256 {
            format!("the value of tag {key:?} is longer than 256 characters")
        } else {
            return Ok(());
        };
        Err(self.err_at(
            at,
            K::Value,
            problem,
            "a tag key of 1-128 characters outside kiln:* and aws:*, with a value of at most 256",
        ))
    }

    pub(super) fn ami(&self, raw: &Spanned<RawAmi>, image: &Image) -> Result<Ami, RecipeError> {
        let r = raw.get_ref();
        let template = self.s(&r.name)?;
        let name = expand_name(&template, image).map_err(|p| {
            self.err(
                &r.name,
                K::Value,
                format!("unknown placeholder {p} in the AMI name"),
                "only {name}, {version}, {arch} and {date}",
            )
        })?;
        let name_ok = (3..=128).contains(&name.len())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "()[] ./-'@_".contains(c));
        if !name_ok {
            return Err(self.err(
                &r.name,
                K::Value,
                format!("AMI name {name:?} is not allowed"),
                "3 to 128 characters: letters, digits, ( ) [ ] space . / - ' @ _",
            ));
        }
        let boot_mode = match self
            .one_of(
                &r.boot_mode,
                &["uefi", "uefi-preferred", "legacy-bios"],
                Some("uefi"),
                "boot_mode",
            )?
            .as_deref()
        {
            Some("uefi-preferred") => BootMode::UefiPreferred,
            Some("legacy-bios") => BootMode::LegacyBios,
            _ => BootMode::Uefi,
        };
        let snapshot_gib = image.size.div_ceil(GIB).max(1);
        let volume_size_gib = match &r.volume_size {
            Some(v) => {
                let gib = self.gib(v, "ami.volume_size")?;
                if gib < snapshot_gib {
                    return Err(self.err(
                        v,
                        K::Value,
                        format!("ami.volume_size is {gib} GiB, smaller than the {snapshot_gib} GiB snapshot of the image"),
                        format!("at least \"{snapshot_gib}GiB\""),
                    ));
                }
                gib
            }
            None => snapshot_gib,
        } as i32;
        let mut volumes = Vec::new();
        for v in &r.volume {
            let vr = v.get_ref();
            volumes.push(super::AmiVolume {
                device_name: self.s(&vr.device_name)?,
                size_gib: self.gib(&vr.size, "ami.volume size")? as i32,
                volume_type: self
                    .one_of(&vr.volume_type, &VOLUME_TYPES, Some("gp3"), "volume_type")?
                    .unwrap_or_default(),
                delete_on_termination: vr.delete_on_termination.unwrap_or(true),
            });
        }
        let mut tags = Vec::new();
        for (k, v) in &r.tags {
            let value = self.s(v)?;
            self.check_tag(k, &value, v.span().start)?;
            tags.push((k.clone(), value));
        }
        let regions = match &r.regions {
            Some(rs) => rs.iter().map(|s| self.s(s)).collect::<Result<_, _>>()?,
            None => Vec::new(),
        };
        let kms_key_arn = self.opt_s(&r.kms_key_arn)?;
        let encrypted = r.encrypted.unwrap_or(false) || kms_key_arn.is_some();
        let shares = Shares {
            accounts: self.list(
                &r.share_accounts,
                valid_account,
                "share_accounts",
                "12-digit AWS account ids like \"111122223333\"",
            )?,
            organizations: self.list(
                &r.share_organizations,
                valid_organization_arn,
                "share_organizations",
                "ARNs like \"arn:aws:organizations::111122223333:organization/o-exampleorgid\"",
            )?,
            organizational_units: self.list(
                &r.share_organizational_units,
                valid_ou_arn,
                "share_organizational_units",
                "ARNs like \"arn:aws:organizations::111122223333:ou/o-exampleorgid/ou-abcd-exampleouid\"",
            )?,
            public: r.public.as_ref().is_some_and(|p| *p.get_ref()),
        };
        let public_pos = match &r.public {
            Some(p) if *p.get_ref() => {
                if encrypted {
                    // EC2: "AMIs with encrypted volumes cannot be made public."
                    return Err(self.err(
                        p,
                        K::Value,
                        "an encrypted AMI cannot be made public",
                        "public = false, or an unencrypted image",
                    ));
                }
                Some(self.pos(p.span().start))
            }
            _ => None,
        };
        let deprecation = self.deprecation(r, shares.public)?;
        Ok(Ami {
            name,
            description: self.opt_s(&r.description)?,
            boot_mode,
            ena_support: r.ena_support.unwrap_or(true),
            sriov_net_support: self
                .one_of(
                    &r.sriov_net_support,
                    &["simple"],
                    Some("simple"),
                    "sriov_net_support",
                )?
                .unwrap_or_default(),
            imds_support: self.one_of(&r.imds_support, &["v2.0"], Some("v2.0"), "imds_support")?,
            tpm_support: self.one_of(&r.tpm_support, &["v2.0"], None, "tpm_support")?,
            uefi_data: self.opt_s(&r.uefi_data)?,
            root_device_name: self
                .opt_s(&r.root_device_name)?
                .unwrap_or_else(|| "/dev/xvda".into()),
            volume_type: self
                .one_of(&r.volume_type, &VOLUME_TYPES, Some("gp3"), "volume_type")?
                .unwrap_or_default(),
            iops: self.positive_i32(&r.iops, "ami.iops")?,
            throughput: self.positive_i32(&r.throughput, "ami.throughput")?,
            volume_size_gib,
            delete_on_termination: r.delete_on_termination.unwrap_or(true),
            regions,
            encrypted,
            kms_key_arn,
            tags,
            volumes,
            shares,
            public_pos,
            deprecation,
            pos: self.pos(raw.span().start),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_utc_days() {
        assert_eq!(date_yyyymmdd(0), "19700101");
        assert_eq!(date_yyyymmdd(1_700_000_000), "20231114");
        assert_eq!(date_yyyymmdd(951_782_400), "20000229");
        assert_eq!(date_yyyymmdd(86_399), "19700101");
    }

    #[test]
    fn utc_times_round_trip() {
        for t in [0, 1_700_000_000, 951_782_400, 1_830_297_600, 4_102_444_799] {
            assert_eq!(parse_utc(&format_utc(t)).unwrap(), t, "{}", format_utc(t));
        }
        assert_eq!(parse_utc("2027-12-31T00:00:00Z").unwrap(), 1_830_211_200);
        assert_eq!(
            parse_utc("2024-02-29T12:00:00.000Z").unwrap(),
            1_709_208_000
        );
        for bad in [
            "2027-12-31",
            "2027-12-31T00:00:00",
            "2027-12-31T00:00:00+01:00",
            "2023-02-29T00:00:00Z",
            "2027-13-01T00:00:00Z",
            "2027-12-31T24:00:00Z",
            "2027-12-31T00:00:00.Z",
            "2027-12-31 00:00:00Z",
        ] {
            assert!(parse_utc(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_have_units_and_limits() {
        assert_eq!(parse_duration("365d").unwrap(), 365 * 86_400);
        assert_eq!(parse_duration("90m").unwrap(), 5400);
        assert_eq!(parse_duration("12h").unwrap(), 43_200);
        assert_eq!(parse_duration("2w").unwrap(), 14 * 86_400);
        assert_eq!(parse_duration("3650d").unwrap(), MAX_DEPRECATION_SECS);
        for bad in [
            "",
            "d",
            "365",
            "0d",
            "-1d",
            "1.5d",
            "3651d",
            "1y",
            "99999999999999999w",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn share_targets_have_the_documented_shape() {
        assert!(valid_account("111122223333"));
        assert!(!valid_account("11112222333") && !valid_account("11112222333a"));
        assert!(valid_organization_arn(
            "arn:aws:organizations::111122223333:organization/o-abcdefghij"
        ));
        assert!(valid_organization_arn(
            "arn:aws-us-gov:organizations::111122223333:organization/o-abcdefghij"
        ));
        assert!(!valid_organization_arn(
            "arn:aws:organizations::111122223333:organization/o-abc"
        ));
        assert!(!valid_organization_arn(
            "arn:aws:organizations::111122223333:ou/o-abcdefghij/ou-abcd-12345678"
        ));
        assert!(valid_ou_arn(
            "arn:aws:organizations::111122223333:ou/o-abcdefghij/ou-abcd-12345678"
        ));
        assert!(!valid_ou_arn(
            "arn:aws:organizations::111122223333:ou/o-abcdefghij/ou-ab-12345678"
        ));
        assert!(!valid_ou_arn(
            "arn:aws:organizations::111122223333:ou/o-ABCDEFGHIJ/ou-abcd-12345678"
        ));
        assert!(!valid_ou_arn(
            "arn:aws:iam::111122223333:ou/o-abcdefghij/ou-abcd-12345678"
        ));
    }

    #[test]
    fn names_expand_known_placeholders_only() {
        let image = Image {
            name: "web".into(),
            version: "1.2".into(),
            arch: Arch::Aarch64,
            size: GIB,
            source_date_epoch: 1_700_000_000,
            seed: String::new(),
        };
        assert_eq!(
            expand_name("{name}-{version}-{arch}-{date}", &image).unwrap(),
            "web-1.2-arm64-20231114"
        );
        assert_eq!(expand_name("x{bad}", &image), Err("{bad}".into()));
        assert_eq!(expand_name("x{name", &image), Err("{name".into()));
    }
}
