//! `[[repository]]`, `[packages]`, `[[user]]` and `[[group]]`: validated like the rest of the
//! recipe, with positioned errors.

use super::error::{RecipeError, RecipeErrorKind as K};
use super::parse::Ctx;
use super::raw::{self, S};
use super::{Group, PackageSet, RepoUri, Repository, User, DEFAULT_KEYRING};
use std::path::Path;

/// Debian Policy §5.6.1: lower-case letters, digits, `+`, `-`, `.`; at least two characters,
/// starting with an alphanumeric.
fn package_name_ok(n: &str) -> bool {
    n.len() >= 2
        && n.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && n.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b))
}

/// What useradd accepts by default (`NAME_REGEX`): `[a-z_][a-z0-9_-]*`, at most 32 characters.
fn user_name_ok(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 32
        && n.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && n.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

impl Ctx<'_> {
    pub(super) fn repositories(
        &self,
        raw: &raw::RawRecipe,
    ) -> Result<Vec<Repository>, RecipeError> {
        let mut out = Vec::new();
        for r in &raw.repository {
            let pos = self.pos(r.span().start);
            let r = r.get_ref();
            let u = self.s(&r.uri)?;
            let uri = if u == "host" {
                RepoUri::Host
            } else if ["http://", "https://", "file://"]
                .iter()
                .any(|p| u.starts_with(p))
            {
                // A file:// archive is a host directory the build reads: the same rule as a
                // `source` (trust.rs).
                if let Some(dir) = u.strip_prefix("file://") {
                    if let Some((real, base)) = self.trust.outside(Path::new(dir), &self.base) {
                        return Err(self.err(
                            &r.uri,
                            K::NotAllowed,
                            format!(
                                "repository {u} is outside the recipe's directory {} ({} is a \
                                 host directory; a recipe is code-like input: it may not read the \
                                 builder's files unless allowed)",
                                base.display(),
                                real.display()
                            ),
                            "a file:// repository inside the recipe's directory, an http(s):// \
                             one, \"host\", or `--allow-host-paths` if this recipe may read the \
                             whole host",
                        ));
                    }
                }
                RepoUri::Url(u.trim_end_matches('/').to_owned())
            } else {
                return Err(self.err(
                    &r.uri,
                    K::Value,
                    format!("repository uri {u:?} is not supported"),
                    "\"host\" or an http://, https:// or file:// URL",
                ));
            };
            let suite = self.s(&r.suite)?;
            if suite.is_empty() || suite.contains(['/', ' ']) {
                return Err(self.err(
                    &r.suite,
                    K::Value,
                    format!("suite {suite:?} is not allowed"),
                    "a suite or codename such as \"bookworm\"",
                ));
            }
            let components = match &r.components {
                None => vec!["main".to_owned()],
                Some(c) => {
                    let v = c
                        .get_ref()
                        .iter()
                        .map(|s| self.s(s))
                        .collect::<Result<Vec<_>, _>>()?;
                    if v.is_empty() || v.iter().any(|c| c.is_empty() || c.contains(' ')) {
                        return Err(self.err(
                            c,
                            K::Value,
                            "components is empty or has an empty name",
                            "a list such as [\"main\"]",
                        ));
                    }
                    v
                }
            };
            let keyring = match &r.keyring {
                None => std::path::PathBuf::from(DEFAULT_KEYRING),
                Some(k) => self.base_path(&self.s(k)?),
            };
            if !keyring.is_file() {
                let at = r
                    .keyring
                    .as_ref()
                    .map_or(r.uri.span().start, |k| k.span().start);
                return Err(self.err_at(
                    at,
                    K::MissingSource,
                    format!("keyring {} does not exist", keyring.display()),
                    "an OpenPGP keyring file (absolute, or relative to the recipe's directory)",
                ));
            }
            if let Some(k) = &r.keyring {
                // The system's keyrings (public keys APT itself trusts) are always readable;
                // any other host file is a `source` like any other (trust.rs).
                let real = std::fs::canonicalize(&keyring).unwrap_or_else(|_| keyring.clone());
                let system = Path::new(DEFAULT_KEYRING)
                    .parent()
                    .unwrap_or(Path::new("/"));
                let outside = self.trust.outside(&keyring, &self.base);
                if let (Some((real, base)), false) = (outside, real.starts_with(system)) {
                    return Err(self.err(
                        k,
                        K::NotAllowed,
                        format!(
                            "keyring {} is outside the recipe's directory {} (a recipe is \
                             code-like input: it may not read the builder's files unless allowed)",
                            real.display(),
                            base.display()
                        ),
                        format!(
                            "a keyring inside the recipe's directory or under {}, or \
                             `--allow-host-paths` if this recipe may read the whole host",
                            system.display()
                        ),
                    ));
                }
            }
            out.push(Repository {
                uri,
                suite,
                components,
                keyring,
                pos,
            });
        }
        Ok(out)
    }

    pub(super) fn packages(
        &self,
        raw: &raw::RawRecipe,
        have_repos: bool,
    ) -> Result<Option<PackageSet>, RecipeError> {
        let Some(p) = &raw.packages else {
            return Ok(None);
        };
        let names = |v: &[S]| -> Result<Vec<String>, RecipeError> {
            let mut out = Vec::new();
            for s in v {
                let n = self.s(s)?;
                if !package_name_ok(&n) {
                    return Err(self.err(
                        s,
                        K::Value,
                        format!("package name {n:?} is not valid"),
                        "a Debian package name: lower-case letters, digits, '+', '-', '.'",
                    ));
                }
                out.push(n);
            }
            Ok(out)
        };
        if !have_repos {
            return Err(self.err(
                p,
                K::Value,
                "[packages] is given but there is no [[repository]]",
                "a [[repository]] to install the packages from",
            ));
        }
        let r = p.get_ref();
        Ok(Some(PackageSet {
            include: names(&r.include)?,
            exclude: names(&r.exclude)?,
            required: r.required,
            pos: self.pos(p.span().start),
        }))
    }

    fn user_name(&self, v: &S, what: &str) -> Result<String, RecipeError> {
        let n = self.s(v)?;
        if !user_name_ok(&n) {
            return Err(self.err(
                v,
                K::Value,
                format!("{what} name {n:?} is not allowed"),
                "[a-z_][a-z0-9_-]*, at most 32 characters",
            ));
        }
        Ok(n)
    }

    pub(super) fn groups(&self, raw: &raw::RawRecipe) -> Result<Vec<Group>, RecipeError> {
        raw.group
            .iter()
            .map(|g| {
                Ok(Group {
                    name: self.user_name(&g.get_ref().name, "group")?,
                    gid: g.get_ref().gid,
                    pos: self.pos(g.span().start),
                })
            })
            .collect()
    }

    pub(super) fn users(&self, raw: &raw::RawRecipe) -> Result<Vec<User>, RecipeError> {
        let mut out: Vec<User> = Vec::new();
        for u in &raw.user {
            let pos = self.pos(u.span().start);
            let r = u.get_ref();
            let name = self.user_name(&r.name, "user")?;
            if out.iter().any(|o| o.name == name) {
                return Err(self.err(
                    &r.name,
                    K::Value,
                    format!("user {name:?} is given twice"),
                    "each user once",
                ));
            }
            let groups = r
                .groups
                .iter()
                .map(|g| self.user_name(g, "group"))
                .collect::<Result<Vec<_>, _>>()?;
            let shell = match &r.shell {
                Some(s) => self.tree_path(s, "shell")?,
                None => "/bin/sh".into(),
            };
            let home = match &r.home {
                Some(h) => self.tree_path(h, "home")?,
                None => format!("/home/{name}"),
            };
            let password = match &r.password {
                Some(p) => {
                    let v = self.s(p)?;
                    if v.contains([':', '\n']) {
                        return Err(self.err(
                            p,
                            K::Value,
                            "password contains ':' or a newline",
                            "a crypt(3) hash such as \"$6$salt$hash\" (see mkpasswd)",
                        ));
                    }
                    Some(v)
                }
                None => None,
            };
            let keys = r
                .ssh_authorized_keys
                .iter()
                .map(|k| {
                    let v = self.s(k)?;
                    if v.contains('\n') {
                        return Err(self.err(
                            k,
                            K::Value,
                            "an ssh key contains a newline",
                            "one key per list item",
                        ));
                    }
                    Ok(v)
                })
                .collect::<Result<Vec<_>, _>>()?;
            out.push(User {
                name,
                uid: r.uid,
                gid: r.gid.unwrap_or(r.uid),
                own_group: r.gid.is_none(),
                groups,
                shell,
                home,
                password,
                ssh_authorized_keys: keys,
                pos,
            });
        }
        Ok(out)
    }
}
