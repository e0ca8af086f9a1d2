//! Loading a recipe: TOML → raw structs with spans → expanded, validated [`Recipe`].

use std::ops::Range;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use toml::Spanned;

use super::error::{RecipeError, RecipeErrorKind as K};
use super::expand::{expand_allowed, ExpandErrorKind};
use super::raw::{self, Scalar, S};
use super::size::{parse_size, SIZE_EXPECTED};
use super::{
    layout, Arch, Entry, EntryKind, FileSource, Filesystem, Image, PartSize, PartType, Partition,
    Placement, Pos, Recipe, Trust, DEFAULT_SOURCE_DATE_EPOCH,
};

/// Looks up an environment variable; injected so that tests never touch the process env.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

impl Recipe {
    /// Reads and validates the recipe at `path`, expanding `${NAME}` from the process env, with
    /// the default [`Trust`] (sources inside the recipe's directory, `KILN_*` variables only).
    pub fn load(path: &Path) -> Result<Recipe, RecipeError> {
        Recipe::load_with(path, &Trust::default())
    }

    /// [`Recipe::load`] with what the user allowed this recipe.
    pub fn load_with(path: &Path, trust: &Trust) -> Result<Recipe, RecipeError> {
        let bytes = std::fs::read(path).map_err(|e| {
            RecipeError::new(
                Pos {
                    file: path.to_owned(),
                    line: 1,
                    col: 1,
                },
                K::Io,
                format!("cannot read the recipe: {e}"),
                "a readable TOML file",
            )
        })?;
        let text = match std::str::from_utf8(&bytes) {
            Ok(t) => t,
            Err(e) => {
                let ok = &bytes[..e.valid_up_to()];
                let ctx = Ctx::new(std::str::from_utf8(ok).unwrap_or(""), path, &no_env, trust);
                return Err(ctx.err_at(
                    ok.len(),
                    K::Io,
                    "the recipe is not valid UTF-8",
                    "UTF-8 text",
                ));
            }
        };
        Recipe::from_str_with(text, path, &|n| std::env::var(n).ok(), trust)
    }

    /// Parses `text` as if read from `path` (relative `source`s resolve against its directory),
    /// expanding `${NAME}` from the process env, with the default [`Trust`].
    pub fn from_str(text: &str, path: &Path) -> Result<Recipe, RecipeError> {
        Recipe::from_str_with_env(text, path, &|n| std::env::var(n).ok())
    }

    /// [`Recipe::from_str`] with an injected environment (also used for `SOURCE_DATE_EPOCH`),
    /// with the default [`Trust`].
    pub fn from_str_with_env(
        text: &str,
        path: &Path,
        env: EnvLookup,
    ) -> Result<Recipe, RecipeError> {
        Recipe::from_str_with(text, path, env, &Trust::default())
    }

    /// [`Recipe::from_str_with_env`] with what the user allowed this recipe.
    pub fn from_str_with(
        text: &str,
        path: &Path,
        env: EnvLookup,
        trust: &Trust,
    ) -> Result<Recipe, RecipeError> {
        let ctx = Ctx::new(text, path, env, trust);
        let raw: raw::RawRecipe = toml::from_str(text).map_err(|e| ctx.toml_error(&e))?;
        let image = ctx.image(&raw.image)?;
        let partitions = raw
            .partition
            .iter()
            .map(|p| ctx.partition(p))
            .collect::<Result<Vec<_>, _>>()?;
        layout::check(&image, &raw.image, &partitions, &ctx)?;
        let entries = ctx.entries(&raw)?;
        let repositories = ctx.repositories(&raw)?;
        let packages = ctx.packages(&raw, !repositories.is_empty())?;
        let users = ctx.users(&raw)?;
        let groups = ctx.groups(&raw)?;
        let ami = match &raw.ami {
            Some(a) => Some(ctx.ami(a, &image)?),
            None => None,
        };
        let boot = match &raw.boot {
            Some(b) => Some(ctx.boot(b, &partitions)?),
            None => None,
        };
        let output = match &raw.output {
            Some(o) => ctx.output(o, &image)?,
            None => Default::default(),
        };
        let container = match &raw.container {
            Some(c) => Some(ctx.container(c)?),
            None => None,
        };
        let services = match &raw.services {
            Some(s) => Some(ctx.services(s)?),
            None => None,
        };
        let tests = ctx.tests(&raw.test)?;
        Ok(Recipe {
            path: path.to_owned(),
            sha256: crate::util::hex(&Sha256::digest(text.as_bytes())),
            image,
            partitions,
            entries,
            repositories,
            packages,
            users,
            groups,
            ami,
            boot,
            output,
            container,
            services,
            tests,
        })
    }
}

fn no_env(_: &str) -> Option<String> {
    None
}

/// Everything needed to turn spans into positions and strings into expanded values.
pub(super) struct Ctx<'a> {
    text: &'a str,
    file: &'a Path,
    pub(super) base: PathBuf,
    env: EnvLookup<'a>,
    pub(super) trust: &'a Trust,
}

impl<'a> Ctx<'a> {
    fn new(text: &'a str, file: &'a Path, env: EnvLookup<'a>, trust: &'a Trust) -> Self {
        let base = file.parent().map(Path::to_owned).unwrap_or_default();
        Ctx {
            text,
            file,
            base,
            env,
            trust,
        }
    }

    /// The recipe's text.
    pub(super) fn text(&self) -> &str {
        self.text
    }

    /// 1-based line and column (in characters) of byte `offset`.
    pub(super) fn pos(&self, offset: usize) -> Pos {
        let bytes = self.text.as_bytes();
        let offset = offset.min(bytes.len());
        let before = &bytes[..offset];
        let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
        let start = before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        // Count characters, not bytes; continuation bytes (10xxxxxx) do not start one.
        let col = before[start..]
            .iter()
            .filter(|&&b| b & 0xc0 != 0x80)
            .count()
            + 1;
        Pos {
            file: self.file.to_owned(),
            line,
            col,
        }
    }

    pub(super) fn err_at(
        &self,
        offset: usize,
        kind: K,
        problem: impl Into<String>,
        expected: impl Into<String>,
    ) -> RecipeError {
        RecipeError::new(self.pos(offset), kind, problem, expected)
    }

    pub(super) fn err<T>(
        &self,
        at: &Spanned<T>,
        kind: K,
        problem: impl Into<String>,
        expected: impl Into<String>,
    ) -> RecipeError {
        self.err_at(at.span().start, kind, problem, expected)
    }

    fn toml_error(&self, e: &toml::de::Error) -> RecipeError {
        let at = e.span().map_or(0, |s| s.start);
        let msg = e.message().trim().replace('\n', "; ");
        let schema = [
            "unknown field",
            "missing field",
            "invalid type",
            "invalid value",
            "invalid length",
            "duplicate",
            "integer is too large",
        ];
        let kind = if schema.iter().any(|s| msg.starts_with(s)) {
            K::Schema
        } else {
            K::Syntax
        };
        // serde's messages read "unknown field `x`, expected one of `a`, `b`": split them so the
        // expectation lands after the semicolon like every other kiln error.
        if let Some((what, exp)) = msg.split_once(", expected ") {
            let exp = match exp {
                "u32" => "a whole number from 0 to 4294967295",
                "i64" => "an integer",
                e => e,
            };
            let what = what.replace("unknown field", "unknown key");
            return self.err_at(at, kind, what, exp.replace("one of", "one of the keys"));
        }
        if msg.starts_with("missing field") {
            let what = msg.replace("missing field", "missing key");
            return self.err_at(
                at,
                kind,
                what,
                "every required key of this table to be present",
            );
        }
        if kind == K::Syntax {
            return self.err_at(at, kind, format!("TOML syntax error: {msg}"), "valid TOML");
        }
        self.err_at(at, kind, msg, "a value of the documented type")
    }

    /// The expanded value of a string.
    pub(super) fn s(&self, v: &S) -> Result<String, RecipeError> {
        self.expand_at(v.get_ref(), v.span())
    }

    pub(super) fn expand_at(&self, s: &str, span: Range<usize>) -> Result<String, RecipeError> {
        expand_allowed(s, &|n| self.trust.allows_env(n), self.env).map_err(|e| {
            // Point at the `${` in the source when it is written there verbatim (no escapes
            // before it), else at the start of the value.
            let raw = self.text.get(span.clone()).unwrap_or("");
            let needle = &s[e.offset..s.len().min(e.offset + 2)];
            let at = raw.find(needle).map_or(span.start, |i| span.start + i);
            let (what, exp) = e.describe();
            let kind = match e.kind {
                ExpandErrorKind::NotAllowed(_) => K::NotAllowed,
                _ => K::Env,
            };
            self.err_at(at, kind, what, exp)
        })
    }

    fn image(&self, raw: &Spanned<raw::RawImage>) -> Result<Image, RecipeError> {
        let r = raw.get_ref();
        let name = self.s(&r.name)?;
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(self.err(
                &r.name,
                K::Value,
                format!("image name {name:?} is not allowed"),
                "lower-case letters, digits and '-' only ([a-z0-9-]+)",
            ));
        }
        let version = self.s(&r.version)?;
        if version.is_empty()
            || version
                .chars()
                .any(|c| c.is_whitespace() || c == '/' || c.is_control())
        {
            return Err(self.err(
                &r.version,
                K::Value,
                format!("image version {version:?} is not allowed"),
                "a non-empty version without spaces or '/'",
            ));
        }
        let arch = match self.s(&r.arch)?.as_str() {
            "x86_64" => Arch::X86_64,
            "aarch64" => Arch::Aarch64,
            other => {
                return Err(self.err(
                    &r.arch,
                    K::Value,
                    format!("unknown arch {other:?}"),
                    "\"x86_64\" or \"aarch64\"",
                ))
            }
        };
        let size = self.size(&r.size, "image size")?;
        if size % 512 != 0 {
            return Err(self.err(
                &r.size,
                K::Value,
                format!("image size {size} is not a whole number of 512-byte sectors"),
                "a multiple of 512 bytes, e.g. \"4GiB\"",
            ));
        }
        let source_date_epoch = match &r.source_date_epoch {
            Some(v) => *v.get_ref(),
            None => match (self.env)("SOURCE_DATE_EPOCH") {
                Some(v) => v.trim().parse().map_err(|_| {
                    let what =
                        format!("environment variable SOURCE_DATE_EPOCH is {v:?}, not a number");
                    let exp = "SOURCE_DATE_EPOCH to be whole seconds since 1970, \
                               or image.source_date_epoch";
                    self.err(raw, K::Env, what, exp)
                })?,
                None => DEFAULT_SOURCE_DATE_EPOCH,
            },
        };
        if source_date_epoch < 0 {
            let at = r
                .source_date_epoch
                .as_ref()
                .map_or(raw.span().start, |s| s.span().start);
            return Err(self.err_at(
                at,
                K::Value,
                format!("source_date_epoch {source_date_epoch} is before 1970"),
                "a non-negative number of seconds",
            ));
        }
        // The default is the name alone, not the version: every UUID, and through the ext4 UUID
        // every metadata checksum (metadata_csum is seeded by it), derives from the seed, so a
        // seed per version would change every metadata block of every version, and the next
        // version's snapshot could not be an increment of the last (issue 18).
        let seed = match &r.seed {
            Some(s) => self.s(s)?,
            None => name.clone(),
        };
        Ok(Image {
            name,
            version,
            arch,
            size,
            source_date_epoch,
            seed,
        })
    }

    /// A size given as an integer or a string; `what` names it in messages.
    pub(super) fn size(&self, v: &Spanned<Scalar>, what: &str) -> Result<u64, RecipeError> {
        let n = match v.get_ref() {
            Scalar::Int(i) => u64::try_from(*i).map_err(|_| format!("{what} {i} is negative")),
            Scalar::Str(s) => parse_size(&self.expand_at(s, v.span())?),
        }
        .map_err(|m| self.err(v, K::Value, m, SIZE_EXPECTED))?;
        if n == 0 {
            return Err(self.err(v, K::Value, format!("{what} is zero"), SIZE_EXPECTED));
        }
        Ok(n)
    }

    fn mode(&self, v: &Option<Spanned<Scalar>>, default: u32) -> Result<u32, RecipeError> {
        const EXP: &str = "mode must be an octal string like \"0644\"";
        let Some(v) = v else { return Ok(default) };
        let bad = |shown: String| self.err(v, K::Value, format!("mode {shown} is not valid"), EXP);
        match v.get_ref() {
            Scalar::Int(i) => Err(bad(format!("{i} (a TOML integer, read as decimal)"))),
            Scalar::Str(s) => {
                let s = self.expand_at(s, v.span())?;
                let ok =
                    (3..=4).contains(&s.len()) && s.bytes().all(|b| (b'0'..=b'7').contains(&b));
                match u32::from_str_radix(&s, 8) {
                    Ok(m) if ok => Ok(m),
                    _ => Err(bad(format!("{s:?}"))),
                }
            }
        }
    }

    /// An absolute path inside the image, checked but kept as written.
    pub(super) fn tree_path(&self, v: &S, what: &str) -> Result<String, RecipeError> {
        let p = self.s(v)?;
        let exp = "an absolute path like \"/etc/hostname\" without \"..\" components";
        if !p.starts_with('/') {
            return Err(self.err(v, K::Value, format!("{what} {p:?} is not absolute"), exp));
        }
        if p.split('/').any(|c| c == "..") {
            return Err(self.err(
                v,
                K::Value,
                format!("{what} {p:?} contains a \"..\" component"),
                exp,
            ));
        }
        if p.contains('\0') {
            return Err(self.err(
                v,
                K::Value,
                format!("{what} {p:?} contains a NUL byte"),
                exp,
            ));
        }
        Ok(p)
    }

    /// A host path, relative ones resolved against the recipe's directory.
    pub(super) fn base_path(&self, s: &str) -> PathBuf {
        self.base.join(s)
    }

    /// A host path relative to the recipe's directory that must exist (`dir`: as a directory).
    fn source(&self, v: &S, dir: bool, entry: Range<usize>) -> Result<PathBuf, RecipeError> {
        let s = self.s(v)?;
        let p = self.base.join(&s);
        let ok = match std::fs::metadata(&p) {
            Ok(m) => m.is_dir() == dir,
            Err(_) => false,
        };
        if !ok {
            let what = if dir { "directory" } else { "file" };
            return Err(self.err_at(
                entry.start,
                K::MissingSource,
                format!("source {what} {} does not exist", p.display()),
                format!(
                    "an existing {what}, relative to the recipe's directory {}",
                    self.base.display()
                ),
            ));
        }
        if let Some((real, base)) = self.trust.outside(&p, &self.base) {
            return Err(self.err(
                v,
                K::NotAllowed,
                format!(
                    "source {} is outside the recipe's directory {} (a recipe is code-like input: it may not copy the builder's files into an image unless allowed)",
                    real.display(),
                    base.display()
                ),
                "a source inside the recipe's directory, or `--allow-host-paths` if this recipe may read the whole host",
            ));
        }
        Ok(p)
    }

    fn partition(&self, raw: &Spanned<raw::RawPartition>) -> Result<Partition, RecipeError> {
        let r = raw.get_ref();
        let label = self.s(&r.label)?;
        if label.is_empty() || label.encode_utf16().count() > 36 || label.contains('\0') {
            return Err(self.err(
                &r.label,
                K::Value,
                format!("partition label {label:?} is not allowed"),
                "a non-empty label of at most 36 characters (GPT limit)",
            ));
        }
        let t = self.s(&r.ptype)?;
        let ptype = match t.as_str() {
            "esp" => PartType::Esp,
            "root" => PartType::Root,
            "linux" => PartType::Linux,
            "swap" => PartType::Swap,
            g => PartType::Guid(parse_guid(g).ok_or_else(|| {
                let what = format!("partition type {g:?} is neither a known name nor a GUID");
                let exp = "\"esp\", \"root\", \"linux\", \"swap\" \
                           or a GUID like \"0FC63DAF-8483-4772-8E79-3D69D8477DE4\"";
                self.err(&r.ptype, K::Value, what, exp)
            })?),
        };
        let size = match r.size.get_ref() {
            Scalar::Str(s) if self.expand_at(s, r.size.span())? == "rest" => PartSize::Rest,
            _ => PartSize::Bytes(self.size(&r.size, "partition size")?),
        };
        let filesystem = match self.s(&r.filesystem)?.as_str() {
            "vfat" => Filesystem::Vfat,
            "ext4" => Filesystem::Ext4,
            "none" => Filesystem::None,
            other => {
                return Err(self.err(
                    &r.filesystem,
                    K::Value,
                    format!("unknown filesystem {other:?}"),
                    "\"vfat\", \"ext4\" or \"none\"",
                ))
            }
        };
        // The partition label is also the filesystem's label: each filesystem has its own rules.
        if let Some((problem, expected)) = fs_label_problem(&label, filesystem) {
            return Err(self.err(&r.label, K::Value, problem, expected));
        }
        let mount = match &r.mount {
            Some(m) => {
                if filesystem == Filesystem::None {
                    return Err(self.err(
                        m,
                        K::Value,
                        "a partition with filesystem \"none\" has a mount",
                        "no mount, or a filesystem",
                    ));
                }
                Some(self.tree_path(m, "mount")?)
            }
            None => None,
        };
        let options = match &r.options {
            Some(o) => {
                let v = self.s(o)?;
                if mount.is_none()
                    || v.is_empty()
                    || v.contains(|c: char| c.is_whitespace() || c == '#')
                {
                    return Err(self.err(
                        o,
                        K::Value,
                        format!("mount options {v:?} are not usable here"),
                        "comma-separated fstab options such as \"rw,discard,errors=remount-ro\", on a partition with a mount",
                    ));
                }
                Some(v)
            }
            None => None,
        };
        let placement = match &r.placement {
            None => Placement::Stable,
            Some(v) => match (self.s(v)?.as_str(), filesystem) {
                ("stable", Filesystem::Ext4) => Placement::Stable,
                ("packed", Filesystem::Ext4) => Placement::Packed,
                (other, _) => {
                    return Err(self.err(
                        v,
                        K::Value,
                        format!("placement {other:?} is not usable here"),
                        "\"stable\" or \"packed\", on an ext4 partition",
                    ))
                }
            },
        };
        Ok(Partition {
            label,
            ptype,
            size,
            filesystem,
            mount,
            options,
            placement,
            pos: self.pos(raw.span().start),
        })
    }

    fn entries(&self, raw: &raw::RawRecipe) -> Result<Vec<Entry>, RecipeError> {
        let mut out: Vec<(usize, EntryKind)> = Vec::new();
        for e in &raw.file {
            let r = e.get_ref();
            let path = self.tree_path(&r.path, "file path")?;
            if path.split('/').all(|c| c.is_empty() || c == ".") {
                return Err(self.err(
                    &r.path,
                    K::Value,
                    "a file cannot replace the root directory",
                    "a path below \"/\"",
                ));
            }
            let source = match (&r.content, &r.source) {
                (Some(c), None) => FileSource::Inline(self.s(c)?),
                (None, Some(s)) => FileSource::Path(self.source(s, false, e.span())?),
                (Some(_), Some(s)) => {
                    return Err(self.err(
                        s,
                        K::Value,
                        "a file has both content and source",
                        "exactly one of content or source",
                    ))
                }
                (None, None) => {
                    return Err(self.err(
                        e,
                        K::Value,
                        "a file has neither content nor source",
                        "exactly one of content or source",
                    ))
                }
            };
            let mode = self.mode(&r.mode, 0o644)?;
            let (owner, group) = (r.owner.unwrap_or(0), r.group.unwrap_or(0));
            out.push((
                e.span().start,
                EntryKind::File {
                    path,
                    source,
                    mode,
                    owner,
                    group,
                },
            ));
        }
        for e in &raw.directory {
            let r = e.get_ref();
            let path = self.tree_path(&r.path, "directory path")?;
            let mode = self.mode(&r.mode, 0o755)?;
            let (owner, group) = (r.owner.unwrap_or(0), r.group.unwrap_or(0));
            out.push((
                e.span().start,
                EntryKind::Directory {
                    path,
                    mode,
                    owner,
                    group,
                },
            ));
        }
        for e in &raw.symlink {
            let r = e.get_ref();
            let path = self.tree_path(&r.path, "symlink path")?;
            if path.split('/').all(|c| c.is_empty() || c == ".") {
                return Err(self.err(
                    &r.path,
                    K::Value,
                    "a symlink cannot replace the root directory",
                    "a path below \"/\"",
                ));
            }
            let target = self.s(&r.target)?;
            if target.is_empty() || target.contains('\0') {
                return Err(self.err(
                    &r.target,
                    K::Value,
                    "symlink target is empty or contains NUL",
                    "a non-empty target",
                ));
            }
            out.push((e.span().start, EntryKind::Symlink { path, target }));
        }
        for e in &raw.tree {
            let r = e.get_ref();
            let source = self.source(&r.source, true, e.span())?;
            let dest = self.tree_path(&r.dest, "tree dest")?;
            out.push((
                e.span().start,
                EntryKind::Tree {
                    source,
                    dest,
                    owner: r.owner,
                    group: r.group,
                },
            ));
        }
        for e in &raw.archive {
            let r = e.get_ref();
            let source = self.source(&r.source, false, e.span())?;
            let dest = match &r.dest {
                Some(d) => self.tree_path(d, "archive dest")?,
                None => "/".into(),
            };
            out.push((e.span().start, EntryKind::Archive { source, dest }));
        }
        // File order, whatever the kind: later entries override earlier ones.
        out.sort_by_key(|(at, _)| *at);
        Ok(out
            .into_iter()
            .map(|(at, kind)| Entry {
                pos: self.pos(at),
                kind,
            })
            .collect())
    }
}

/// Why `label` cannot be the label of a `filesystem` (what is wrong, what is expected).
///
/// FAT keeps 11 bytes in the boot sector and the root directory, with the characters of an 8.3
/// short name (Microsoft's FAT specification, "Directory Structure"): kiln upper-cases ASCII
/// letters, and refuses what fsck.fat refuses (`. + , ; = [ ]` and the rest of the list below)
/// and anything outside ASCII, which depends on a code page. ext4 keeps 16 bytes of UTF-8
/// (`s_volume_name`); a longer one would be cut, possibly inside a character.
pub fn fs_label_problem(label: &str, filesystem: Filesystem) -> Option<(String, String)> {
    match filesystem {
        Filesystem::Vfat => {
            let bad = label.chars().find(|&c| !fat_label_char(c));
            if label.len() > 11 || bad.is_some() || label.starts_with(' ') {
                let why = match bad {
                    Some(c) => format!("has {c:?}, which a FAT label cannot hold"),
                    None if label.starts_with(' ') => "starts with a space".to_owned(),
                    None => format!("is {} bytes long", label.len()),
                };
                return Some((
                    format!("partition label {label:?} is also the FAT volume label, and {why}"),
                    "at most 11 ASCII letters, digits, spaces (not first) or ! # $ % & ' ( ) - @ ^ _ ` { } ~".to_owned(),
                ));
            }
            None
        }
        Filesystem::Ext4 if label.len() > 16 => Some((
            format!(
                "partition label {label:?} is also the ext4 label, and is {} bytes long",
                label.len()
            ),
            "an ext4 label of at most 16 bytes (UTF-8)".to_owned(),
        )),
        _ => None,
    }
}

fn fat_label_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || " !#$%&'()-@^_`{}~".contains(c)
}

/// A GUID in its textual form (`8-4-4-4-12` hex digits), as bytes in the order written.
pub fn parse_guid(s: &str) -> Option<[u8; 16]> {
    let groups: Vec<&str> = s.split('-').collect();
    let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
    if lens != [8, 4, 4, 4, 12] {
        return None;
    }
    let hex: String = groups.concat();
    let mut out = [0u8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}
