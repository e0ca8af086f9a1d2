//! The recipe as serde reads it: every key, with its span in the file, before validation.

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use toml::Spanned;

pub type S = Spanned<String>;

/// An integer or a string (sizes and modes accept both, and explain what they want).
#[derive(Debug, Clone)]
pub enum Scalar {
    Int(i64),
    Str(String),
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an integer or a string")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                i64::try_from(v)
                    .map(Scalar::Int)
                    .map_err(|_| E::custom("integer is too large"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar::Str(v.to_owned()))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRecipe {
    pub image: Spanned<RawImage>,
    #[serde(default)]
    pub partition: Vec<Spanned<RawPartition>>,
    #[serde(default)]
    pub file: Vec<Spanned<RawFile>>,
    #[serde(default)]
    pub directory: Vec<Spanned<RawDirectory>>,
    #[serde(default)]
    pub symlink: Vec<Spanned<RawSymlink>>,
    #[serde(default)]
    pub tree: Vec<Spanned<RawTree>>,
    #[serde(default)]
    pub archive: Vec<Spanned<RawArchive>>,
    #[serde(default)]
    pub repository: Vec<Spanned<RawRepository>>,
    pub packages: Option<Spanned<RawPackages>>,
    #[serde(default)]
    pub user: Vec<Spanned<RawUser>>,
    #[serde(default)]
    pub group: Vec<Spanned<RawGroup>>,
    pub ami: Option<Spanned<RawAmi>>,
    pub boot: Option<Spanned<super::boot::RawBoot>>,
    pub output: Option<Spanned<super::output::RawOutput>>,
    pub container: Option<Spanned<super::output::RawContainer>>,
    pub services: Option<Spanned<super::services::RawServices>>,
    #[serde(default)]
    pub test: Vec<Spanned<super::test::RawTest>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawImage {
    pub name: S,
    pub version: S,
    pub arch: S,
    pub size: Spanned<Scalar>,
    pub source_date_epoch: Option<Spanned<i64>>,
    pub seed: Option<S>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPartition {
    pub label: S,
    #[serde(rename = "type")]
    pub ptype: S,
    pub size: Spanned<Scalar>,
    pub filesystem: S,
    pub mount: Option<S>,
    pub options: Option<S>,
    pub placement: Option<S>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFile {
    pub path: S,
    pub content: Option<S>,
    pub source: Option<S>,
    pub mode: Option<Spanned<Scalar>>,
    pub owner: Option<u32>,
    pub group: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDirectory {
    pub path: S,
    pub mode: Option<Spanned<Scalar>>,
    pub owner: Option<u32>,
    pub group: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSymlink {
    pub path: S,
    pub target: S,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTree {
    pub source: S,
    pub dest: S,
    pub owner: Option<u32>,
    pub group: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawArchive {
    pub source: S,
    pub dest: Option<S>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRepository {
    pub uri: S,
    pub suite: S,
    pub components: Option<Spanned<Vec<S>>>,
    pub keyring: Option<S>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPackages {
    #[serde(default)]
    pub include: Vec<S>,
    #[serde(default)]
    pub exclude: Vec<S>,
    #[serde(default)]
    pub required: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUser {
    pub name: S,
    pub uid: u32,
    pub gid: Option<u32>,
    #[serde(default)]
    pub groups: Vec<S>,
    pub shell: Option<S>,
    pub home: Option<S>,
    pub password: Option<S>,
    #[serde(default)]
    pub ssh_authorized_keys: Vec<S>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAmi {
    pub name: S,
    pub description: Option<S>,
    pub boot_mode: Option<S>,
    pub ena_support: Option<bool>,
    pub sriov_net_support: Option<S>,
    pub imds_support: Option<S>,
    pub tpm_support: Option<S>,
    pub uefi_data: Option<S>,
    pub root_device_name: Option<S>,
    pub volume_type: Option<S>,
    pub iops: Option<Spanned<i64>>,
    pub throughput: Option<Spanned<i64>>,
    pub volume_size: Option<Spanned<Scalar>>,
    pub delete_on_termination: Option<bool>,
    pub regions: Option<Vec<S>>,
    pub encrypted: Option<bool>,
    pub kms_key_arn: Option<S>,
    pub share_accounts: Option<Vec<S>>,
    pub share_organizations: Option<Vec<S>>,
    pub share_organizational_units: Option<Vec<S>>,
    pub public: Option<Spanned<bool>>,
    pub deprecate_after: Option<S>,
    pub deprecate_at: Option<S>,
    #[serde(default)]
    pub tags: std::collections::BTreeMap<String, S>,
    #[serde(default)]
    pub volume: Vec<Spanned<RawAmiVolume>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGroup {
    pub name: S,
    pub gid: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAmiVolume {
    pub device_name: S,
    pub size: Spanned<Scalar>,
    pub volume_type: Option<S>,
    pub delete_on_termination: Option<bool>,
}
