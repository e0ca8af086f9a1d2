//! `[output]`: which files a build writes, and `[container]`: the OCI image's configuration.
//!
//! ```toml
//! [output]
//! formats = ["raw", "qcow2", "vhd", "vmdk", "oci"]   # default ["raw"]; `--format` overrides
//! oci_archive = false                               # the OCI image as one .tar, not a directory
//!
//! [container]
//! entrypoint = ["/usr/bin/app"]
//! cmd = ["--serve"]
//! env = { PATH = "/usr/sbin:/usr/bin:/sbin:/bin" }
//! user = "1000:1000"
//! working_dir = "/srv"
//! exposed_ports = ["8080/tcp", "53/udp"]
//! labels = { "org.example.team" = "web" }
//! annotations = { "org.opencontainers.image.source" = "https://example.com/web" }
//! compression = "gzip"        # or "zstd"
//! include_boot = false        # the ESP, the kernel and /boot stay out of the image unless true
//! tag = "1.0.0"               # the ref name in index.json; default the image version
//! ```
//! The raw (serde) shapes live here, so that both tables stay in one module.

use serde::Deserialize;
use std::collections::BTreeMap;
use toml::Spanned;

use super::error::{RecipeError, RecipeErrorKind as K};
use super::parse::Ctx;
use super::raw::S;
use super::Image;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOutput {
    pub formats: Option<Spanned<Vec<S>>>,
    pub oci_archive: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawContainer {
    pub entrypoint: Option<Vec<S>>,
    pub cmd: Option<Vec<S>>,
    #[serde(default)]
    pub env: BTreeMap<Spanned<String>, S>,
    pub user: Option<S>,
    pub working_dir: Option<S>,
    #[serde(default)]
    pub exposed_ports: Vec<S>,
    #[serde(default)]
    pub labels: BTreeMap<String, S>,
    #[serde(default)]
    pub annotations: BTreeMap<Spanned<String>, S>,
    pub compression: Option<S>,
    pub include_boot: Option<bool>,
    pub tag: Option<S>,
}

/// One output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OutputFormat {
    Raw,
    Qcow2,
    Vhd,
    Vmdk,
    Oci,
}

pub const FORMATS_EXPECTED: &str = "\"raw\", \"qcow2\", \"vhd\", \"vmdk\" or \"oci\"";

impl OutputFormat {
    pub fn parse(s: &str) -> Option<OutputFormat> {
        Some(match s {
            "raw" => OutputFormat::Raw,
            "qcow2" => OutputFormat::Qcow2,
            "vhd" => OutputFormat::Vhd,
            "vmdk" => OutputFormat::Vmdk,
            "oci" => OutputFormat::Oci,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            OutputFormat::Raw => "raw",
            OutputFormat::Qcow2 => "qcow2",
            OutputFormat::Vhd => "vhd",
            OutputFormat::Vmdk => "vmdk",
            OutputFormat::Oci => "oci",
        }
    }
}

/// `[output]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// Sorted, without duplicates; never empty.
    pub formats: Vec<OutputFormat>,
    pub oci_archive: bool,
}

impl Default for Output {
    fn default() -> Self {
        Output {
            formats: vec![OutputFormat::Raw],
            oci_archive: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerCompression {
    Gzip,
    Zstd,
}

/// `[container]`, validated.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Container {
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    /// `NAME=value`, sorted by name.
    pub env: Vec<String>,
    pub user: Option<String>,
    pub working_dir: Option<String>,
    /// Normalized to `PORT/PROTO`, sorted.
    pub exposed_ports: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub compression: Option<LayerCompression>,
    pub include_boot: bool,
    pub tag: Option<String>,
}

/// A tag as the distribution spec allows: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
pub fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// `80`, `80/tcp`, `53/udp`, `9/sctp` → `PORT/PROTO`.
fn port(s: &str) -> Option<String> {
    let (num, proto) = s.split_once('/').unwrap_or((s, "tcp"));
    let n: u16 = num.parse().ok().filter(|n| *n > 0)?;
    matches!(proto, "tcp" | "udp" | "sctp").then(|| format!("{n}/{proto}"))
}

impl Ctx<'_> {
    pub(super) fn output(
        &self,
        raw: &Spanned<RawOutput>,
        image: &Image,
    ) -> Result<Output, RecipeError> {
        let r = raw.get_ref();
        let mut formats = Vec::new();
        if let Some(list) = &r.formats {
            for f in list.get_ref() {
                let name = self.s(f)?;
                let Some(format) = OutputFormat::parse(&name) else {
                    return Err(self.err(
                        f,
                        K::Value,
                        format!("unknown output format {name:?}"),
                        FORMATS_EXPECTED,
                    ));
                };
                if format == OutputFormat::Vhd && image.size % (1 << 20) != 0 {
                    return Err(self.err(
                        f,
                        K::Value,
                        format!(
                            "a VHD needs a whole number of MiB (Azure's rule), but the image is {} bytes",
                            image.size
                        ),
                        "[image] size in whole MiB, e.g. \"4GiB\"",
                    ));
                }
                formats.push(format);
            }
            if formats.is_empty() {
                return Err(self.err(
                    list,
                    K::Value,
                    "formats is empty",
                    format!("at least one of {FORMATS_EXPECTED}"),
                ));
            }
        } else {
            formats.push(OutputFormat::Raw);
        }
        formats.sort();
        formats.dedup();
        Ok(Output {
            formats,
            oci_archive: r.oci_archive.unwrap_or(false),
        })
    }

    pub(super) fn container(&self, raw: &Spanned<RawContainer>) -> Result<Container, RecipeError> {
        let r = raw.get_ref();
        let list = |v: &Option<Vec<S>>| -> Result<Option<Vec<String>>, RecipeError> {
            v.as_ref()
                .map(|l| l.iter().map(|s| self.s(s)).collect())
                .transpose()
        };
        let mut env = Vec::new();
        for (k, v) in &r.env {
            let name = k.get_ref();
            if name.is_empty() || name.contains('=') || name.contains('\0') {
                return Err(self.err(
                    k,
                    K::Value,
                    format!("environment variable name {name:?} is not allowed"),
                    "a non-empty name without '=' or NUL",
                ));
            }
            env.push(format!("{name}={}", self.s(v)?));
        }
        let user = match &r.user {
            Some(u) => {
                let s = self.s(u)?;
                if s.is_empty() || s.contains(char::is_whitespace) {
                    return Err(self.err(
                        u,
                        K::Value,
                        format!("user {s:?} is not allowed"),
                        "a user or uid, optionally with a group: \"app\", \"1000\", \"1000:1000\"",
                    ));
                }
                Some(s)
            }
            None => None,
        };
        let working_dir = match &r.working_dir {
            Some(w) => Some(self.tree_path(w, "working_dir")?),
            None => None,
        };
        let mut exposed_ports = Vec::new();
        for p in &r.exposed_ports {
            let s = self.s(p)?;
            exposed_ports.push(port(&s).ok_or_else(|| {
                self.err(
                    p,
                    K::Value,
                    format!("exposed port {s:?} is not valid"),
                    "a port from 1 to 65535, optionally with /tcp, /udp or /sctp: \"8080/tcp\"",
                )
            })?);
        }
        exposed_ports.sort();
        exposed_ports.dedup();
        let labels = r
            .labels
            .iter()
            .map(|(k, v)| Ok((k.clone(), self.s(v)?)))
            .collect::<Result<_, RecipeError>>()?;
        let mut annotations = BTreeMap::new();
        for (k, v) in &r.annotations {
            if k.get_ref().is_empty() {
                return Err(self.err(
                    k,
                    K::Value,
                    "an empty annotation key",
                    "a key such as \"org.opencontainers.image.source\"",
                ));
            }
            annotations.insert(k.get_ref().clone(), self.s(v)?);
        }
        let compression = match &r.compression {
            None => None,
            Some(c) => Some(match self.s(c)?.as_str() {
                "gzip" => LayerCompression::Gzip,
                "zstd" => LayerCompression::Zstd,
                other => {
                    return Err(self.err(
                        c,
                        K::Value,
                        format!("unknown layer compression {other:?}"),
                        "\"gzip\" or \"zstd\"",
                    ))
                }
            }),
        };
        let tag = match &r.tag {
            Some(t) => {
                let s = self.s(t)?;
                if !valid_tag(&s) {
                    return Err(self.err(
                        t,
                        K::Value,
                        format!("tag {s:?} is not a valid image tag"),
                        "letters, digits, '_', '.' and '-', at most 128, not starting with '.' or '-'",
                    ));
                }
                Some(s)
            }
            None => None,
        };
        Ok(Container {
            entrypoint: list(&r.entrypoint)?,
            cmd: list(&r.cmd)?,
            env,
            user,
            working_dir,
            exposed_ports,
            labels,
            annotations,
            compression,
            include_boot: r.include_boot.unwrap_or(false),
            tag,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_and_tags() {
        assert_eq!(port("80").as_deref(), Some("80/tcp"));
        assert_eq!(port("53/udp").as_deref(), Some("53/udp"));
        assert_eq!(port("0"), None);
        assert_eq!(port("70000"), None);
        assert_eq!(port("80/icmp"), None);
        assert!(valid_tag("1.0.0"));
        assert!(valid_tag("_x"));
        assert!(!valid_tag(".x"));
        assert!(!valid_tag("1.0+b"));
    }
}
