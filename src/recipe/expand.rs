//! `${NAME}` expansion in recipe strings.
//!
//! Rules (kept deliberately smaller than a shell's):
//! - `${NAME}` is replaced by the variable's value; an unset variable is an error.
//! - `${NAME:-fallback}` gives `fallback` when `NAME` is unset or empty. The fallback is literal
//!   text up to the first `}` (no nesting).
//! - `NAME` is `[A-Za-z_][A-Za-z0-9_]*`.
//! - `$${` is the escape for a literal `${` (a shell script or unit file in `content` keeps its
//!   own `${VAR}` by writing `$${VAR}`). Every other `$` is copied as is: `$HOME`, `$$` and a
//!   trailing `$` stay literal.

/// Why a string could not be expanded; `offset` is the byte offset of the `$` in the string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpandError {
    pub offset: usize,
    pub kind: ExpandErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpandErrorKind {
    Unset(String),
    /// A variable the recipe may not read (see [`super::Trust`]).
    NotAllowed(String),
    BadName(String),
    Unterminated,
}

impl ExpandError {
    /// (what is wrong, what is expected), for a [`super::RecipeError`].
    pub fn describe(&self) -> (String, String) {
        match &self.kind {
            ExpandErrorKind::Unset(n) => (
                format!("environment variable {n} is not set"),
                format!("{n} to be set, or a fallback like ${{{n}:-value}}"),
            ),
            ExpandErrorKind::NotAllowed(n) => (
                format!(
                    "the recipe reads environment variable {n}, and a recipe may read only {}* variables unless allowed",
                    super::ALWAYS_ALLOWED_PREFIX
                ),
                format!("the value written in the recipe, or `--allow-env {n}` if this recipe may read it")
            ),
            ExpandErrorKind::BadName(n) => (
                format!("{n:?} is not a valid variable name in ${{...}}"),
                "a name of letters, digits and underscores, not starting with a digit".into(),
            ),
            ExpandErrorKind::Unterminated => (
                "\"${\" is not closed".into(),
                "${NAME} or ${NAME:-fallback}".into(),
            ),
        }
    }
}

/// Expands `s`, looking variables up with `env`.
pub fn expand(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, ExpandError> {
    expand_allowed(s, &|_| true, env)
}

/// [`expand`], refusing (before looking it up, fallback or not) any variable `allowed` refuses.
pub fn expand_allowed(
    s: &str,
    allowed: &dyn Fn(&str) -> bool,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, ExpandError> {
    if !s.contains('$') {
        return Ok(s.to_owned());
    }
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while let Some(rel) = s[i..].find('$') {
        let d = i + rel;
        out.push_str(&s[i..d]);
        let rest = &s[d..];
        if rest.starts_with("$${") {
            out.push_str("${");
            i = d + 3;
        } else if rest.starts_with("$$") {
            out.push_str("$$");
            i = d + 2;
        } else if let Some(body) = rest.strip_prefix("${") {
            let end = body.find('}').ok_or(ExpandError {
                offset: d,
                kind: ExpandErrorKind::Unterminated,
            })?;
            let inner = &body[..end];
            let (name, fallback) = match inner.split_once(":-") {
                Some((n, f)) => (n, Some(f)),
                None => (inner, None),
            };
            if !valid_name(name) {
                return Err(ExpandError {
                    offset: d,
                    kind: ExpandErrorKind::BadName(name.into()),
                });
            }
            if !allowed(name) {
                return Err(ExpandError {
                    offset: d,
                    kind: ExpandErrorKind::NotAllowed(name.into()),
                });
            }
            match (env(name), fallback) {
                (Some(v), Some(f)) if v.is_empty() => out.push_str(f),
                (Some(v), _) => out.push_str(&v),
                (None, Some(f)) => out.push_str(f),
                (None, None) => {
                    return Err(ExpandError {
                        offset: d,
                        kind: ExpandErrorKind::Unset(name.into()),
                    })
                }
            }
            i = d + 2 + end + 1;
        } else {
            out.push('$');
            i = d + 1;
        }
    }
    out.push_str(&s[i..]);
    Ok(out)
}

fn valid_name(n: &str) -> bool {
    let mut b = n.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(n: &str) -> Option<String> {
        match n {
            "A" => Some("alpha".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expansion_rules() {
        assert_eq!(expand("x${A}y", &env).unwrap(), "xalphay");
        assert_eq!(expand("${B:-beta}", &env).unwrap(), "beta");
        assert_eq!(expand("${A:-beta}", &env).unwrap(), "alpha");
        assert_eq!(expand("${EMPTY:-e}", &env).unwrap(), "e");
        assert_eq!(expand("${EMPTY}", &env).unwrap(), "");
        assert_eq!(expand("$$ $A $${A} $", &env).unwrap(), "$$ $A ${A} $");
        assert_eq!(expand("$${A:-x}${A}", &env).unwrap(), "${A:-x}alpha");
        assert_eq!(expand("$$${A}", &env).unwrap(), "$$alpha");
        assert_eq!(
            expand("$$${A", &env).unwrap_err().kind,
            ExpandErrorKind::Unterminated
        );
        assert_eq!(expand("é${A}é", &env).unwrap(), "éalphaé");
        let e = expand("ab${NOPE}", &env).unwrap_err();
        assert_eq!(
            e,
            ExpandError {
                offset: 2,
                kind: ExpandErrorKind::Unset("NOPE".into())
            }
        );
        assert_eq!(
            expand("${A", &env).unwrap_err().kind,
            ExpandErrorKind::Unterminated
        );
        assert!(matches!(
            expand("${1x}", &env).unwrap_err().kind,
            ExpandErrorKind::BadName(_)
        ));
        // A variable that is not allowed is refused even with a fallback, and never read.
        let only_a = |n: &str| n == "A";
        let e = expand_allowed("x${B:-beta}", &only_a, &|n| panic!("read {n}")).unwrap_err();
        assert_eq!(
            e,
            ExpandError {
                offset: 1,
                kind: ExpandErrorKind::NotAllowed("B".into())
            }
        );
        assert_eq!(expand_allowed("${A}", &only_a, &env).unwrap(), "alpha");
    }
}
