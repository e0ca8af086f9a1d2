//! `[services]`: which systemd units the image enables, disables or masks, and its default
//! target, applied after the packages' own choices and the recipe's files.
//!
//! ```toml
//! [services]
//! enable = ["nginx.service"]
//! disable = ["apt-daily.timer"]
//! mask = ["ssh.socket"]
//! default_target = "multi-user.target"
//! ```

use serde::Deserialize;
use toml::Spanned;

use super::error::{RecipeError, RecipeErrorKind as K};
use super::parse::Ctx;
use super::raw::S;
use super::Pos;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServices {
    #[serde(default)]
    pub enable: Vec<S>,
    #[serde(default)]
    pub disable: Vec<S>,
    #[serde(default)]
    pub mask: Vec<S>,
    pub default_target: Option<S>,
}

/// A unit named in `[services]`, with where it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceUnit {
    pub name: String,
    pub pos: Pos,
}

/// `[services]`, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Services {
    pub enable: Vec<ServiceUnit>,
    pub disable: Vec<ServiceUnit>,
    pub mask: Vec<ServiceUnit>,
    pub default_target: Option<ServiceUnit>,
}

/// The unit types of systemd.unit(5), as a unit name's suffix.
pub const UNIT_TYPES: &[&str] = &[
    "service",
    "socket",
    "target",
    "device",
    "mount",
    "automount",
    "swap",
    "timer",
    "path",
    "slice",
    "scope",
];

/// systemd.unit(5): `name[@instance].type`, at most 255 characters of letters, digits and
/// `:-_.\@`.
fn unit_name_ok(n: &str) -> bool {
    let Some((stem, ty)) = n.rsplit_once('.') else {
        return false;
    };
    n.len() <= 255
        && UNIT_TYPES.contains(&ty)
        && !stem.is_empty()
        && !stem.starts_with('@')
        && stem.matches('@').count() <= 1
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || ":-_.\\@".contains(c))
}

const UNIT_EXPECTED: &str =
    "a systemd unit name such as \"nginx.service\" or \"getty@tty1.service\"";

impl Ctx<'_> {
    fn unit(&self, v: &S) -> Result<ServiceUnit, RecipeError> {
        let name = self.s(v)?;
        if !unit_name_ok(&name) {
            return Err(self.err(
                v,
                K::Value,
                format!("{name:?} is not a unit name"),
                UNIT_EXPECTED,
            ));
        }
        Ok(ServiceUnit {
            name,
            pos: self.pos(v.span().start),
        })
    }

    pub(super) fn services(&self, raw: &Spanned<RawServices>) -> Result<Services, RecipeError> {
        let r = raw.get_ref();
        let list = |v: &[S]| {
            v.iter()
                .map(|s| self.unit(s))
                .collect::<Result<Vec<_>, _>>()
        };
        let out = Services {
            enable: list(&r.enable)?,
            disable: list(&r.disable)?,
            mask: list(&r.mask)?,
            default_target: r
                .default_target
                .as_ref()
                .map(|t| self.unit(t))
                .transpose()?,
        };
        // A unit in two lists (or twice in one) has no single meaning.
        let mut seen: Vec<(&str, &str)> = Vec::new();
        for (what, units) in [
            ("enable", &out.enable),
            ("disable", &out.disable),
            ("mask", &out.mask),
        ] {
            for (u, raw_v) in units.iter().zip(match what {
                "enable" => &r.enable,
                "disable" => &r.disable,
                _ => &r.mask,
            }) {
                if let Some((other, _)) = seen.iter().find(|(_, n)| *n == u.name) {
                    return Err(self.err(
                        raw_v,
                        K::Value,
                        format!("unit {:?} is already listed in {other}", u.name),
                        "each unit in one of enable, disable and mask, once",
                    ));
                }
                seen.push((what, &u.name));
            }
        }
        if let (Some(t), Some(raw_t)) = (&out.default_target, &r.default_target) {
            if !t.name.ends_with(".target") || t.name.contains('@') {
                return Err(self.err(
                    raw_t,
                    K::Value,
                    format!("default_target {:?} is not a target", t.name),
                    "a target unit such as \"multi-user.target\" or \"graphical.target\"",
                ));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn unit_names() {
        for ok in [
            "nginx.service",
            "getty@tty1.service",
            "getty@.service",
            "a-b_c:d.socket",
            "multi-user.target",
        ] {
            assert!(super::unit_name_ok(ok), "{ok}");
        }
        for bad in [
            "nginx",
            "x.conf",
            "@x.service",
            "a@b@c.service",
            "a b.service",
            ".service",
        ] {
            assert!(!super::unit_name_ok(bad), "{bad}");
        }
    }
}
