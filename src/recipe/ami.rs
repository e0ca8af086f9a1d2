//! `[ami]`: how `kiln register` turns a snapshot of the image into an AMI.
//!
//! `name` may hold placeholders, expanded when the recipe is loaded:
//! `{name}` and `{version}` (from `[image]`), `{arch}` (`x86_64` or `arm64`, as EC2 names it),
//! and `{date}` (the UTC day of `source_date_epoch` as `YYYYMMDD`, so it is reproducible).
//! RegisterImage reference: <https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_RegisterImage.html>.

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
    pub pos: Pos,
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
            tags.push((k.clone(), self.s(v)?));
        }
        let regions = match &r.regions {
            Some(rs) => rs.iter().map(|s| self.s(s)).collect::<Result<_, _>>()?,
            None => Vec::new(),
        };
        let kms_key_arn = self.opt_s(&r.kms_key_arn)?;
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
            encrypted: r.encrypted.unwrap_or(false) || kms_key_arn.is_some(),
            kms_key_arn,
            tags,
            volumes,
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
