//! The recipe: a TOML file describing one disk image.
//!
//! Loading rejects unknown keys, expands `${NAME}` / `${NAME:-fallback}` in every string value,
//! and reports every error as `FILE:LINE:COL: what is wrong; what is expected`. What a recipe may
//! read from the host (files outside its directory, environment variables) is limited by a
//! [`Trust`].
//! `$$` and a `$` not followed by `{` are kept as written (see [`expand`]).
//!
//! Entries of all kinds (`[[file]]`, `[[directory]]`, `[[symlink]]`, `[[tree]]`, `[[archive]]`)
//! land in [`Recipe::entries`] in the order they appear in the file, whatever their kind.
//!
//! `[[repository]]` (a Debian archive: `uri` is `"host"` or an http(s)/file URL, `suite`,
//! `components`, `keyring`), `[packages]` (`include`, `exclude`, `required`), `[[user]]` and
//! `[[group]]` describe the system; package files are installed first, then accounts and
//! `/etc`, then the entries above on top (so the recipe's own files win).
//!
//! `[[test]]` lists the checks `kiln test` runs on the booted image (see `test`).

mod ami;
mod boot;
mod error;
mod expand;
mod layout;
mod output;
mod parse;
mod raw;
mod services;
mod size;
mod system;
mod test;
mod trust;

pub use ami::{
    format_utc, parse_duration, parse_utc, valid_account, valid_organization_arn, valid_ou_arn,
    Ami, AmiVolume, BootMode, Deprecation, Shares,
};
pub use boot::{Boot, Compression, Initrd, KernelChoice, Loader};
pub use error::{RecipeError, RecipeErrorKind};
pub use expand::{expand, expand_allowed, ExpandError, ExpandErrorKind};
pub use output::{valid_tag, Container, LayerCompression, Output, OutputFormat, FORMATS_EXPECTED};
pub use parse::{fs_label_problem, parse_guid, EnvLookup};
pub use services::{ServiceUnit, Services, UNIT_TYPES};
pub use size::{parse_size, GIB, KIB, MIB, TIB};
pub use test::{
    HttpTest, Pattern, SshTest, SystemdTest, Test, TestKind, TestPlan, DEFAULT_TIMEOUT_SECS,
    DEFAULT_USER,
};
pub use trust::{Trust, ALWAYS_ALLOWED_PREFIX};

use std::path::PathBuf;

/// Where in the recipe something was written, for error messages (1-based line and column).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Pos {
    pub file: PathBuf,
    pub line: usize,
    pub col: usize,
}

impl std::fmt::Display for Pos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.col)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    X86_64,
    Aarch64,
}

impl Arch {
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }
}

/// `[image]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub name: String,
    pub version: String,
    pub arch: Arch,
    /// Disk size in bytes.
    pub size: u64,
    /// Already resolved: recipe, else env `SOURCE_DATE_EPOCH`, else [`DEFAULT_SOURCE_DATE_EPOCH`].
    pub source_date_epoch: i64,
    /// Already resolved: recipe, else `"{name}"` (versions of one image keep their UUIDs).
    pub seed: String,
}

/// Used when neither the recipe nor the environment gives a time. Never the wall clock.
pub const DEFAULT_SOURCE_DATE_EPOCH: i64 = 1_700_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartType {
    Esp,
    /// The architecture's Discoverable Partitions root type.
    Root,
    Linux,
    Swap,
    /// Any type GUID, in the usual textual byte order (as `sgdisk` prints it).
    Guid([u8; 16]),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartSize {
    Bytes(u64),
    Rest,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filesystem {
    Vfat,
    Ext4,
    None,
}

/// `[[partition]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    pub label: String,
    pub ptype: PartType,
    pub size: PartSize,
    pub filesystem: Filesystem,
    /// Absolute path in the tree whose subtree this filesystem holds (`/` for the root).
    pub mount: Option<String>,
    /// Mount options for `/etc/fstab` (`None`: kiln's defaults for the filesystem).
    pub options: Option<String>,
    /// Where an ext4 filesystem puts files and inodes (`placement = "stable" | "packed"`).
    pub placement: Placement,
    pub pos: Pos,
}

/// How an ext4 partition's writer places files and inodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Placement {
    /// Each file where its path's hash says, with slack, so that the next version of the image
    /// keeps unchanged files on the same blocks (a child snapshot sends only what changed).
    #[default]
    Stable,
    /// Walk order without gaps, as mke2fs -d does: the smallest image, but one changed file
    /// moves every file after it.
    Packed,
}

/// One tree entry, in the order it appears in the recipe file (later entries override earlier
/// ones at the same path, whatever their kind).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub pos: Pos,
    pub kind: EntryKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileSource {
    Inline(String),
    /// Resolved against the recipe's directory.
    Path(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// `[[file]]`: mode defaults to 0644, owner/group to 0.
    File {
        path: String,
        source: FileSource,
        mode: u32,
        owner: u32,
        group: u32,
    },
    /// `[[directory]]`: mode defaults to 0755.
    Directory {
        path: String,
        mode: u32,
        owner: u32,
        group: u32,
    },
    /// `[[symlink]]`.
    Symlink { path: String, target: String },
    /// `[[tree]]`: a host directory (resolved against the recipe's directory) copied to `dest`.
    Tree {
        source: PathBuf,
        dest: String,
        owner: Option<u32>,
        group: Option<u32>,
    },
    /// `[[archive]]`: a .tar, .tar.gz/.tgz or .tar.zst unpacked at `dest`.
    Archive { source: PathBuf, dest: String },
}

/// A whole recipe, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipe {
    /// The recipe file itself.
    pub path: PathBuf,
    /// SHA-256 (hex) of the recipe file's bytes.
    pub sha256: String,
    pub image: Image,
    pub partitions: Vec<Partition>,
    pub entries: Vec<Entry>,
    /// `[[repository]]`, in recipe order.
    pub repositories: Vec<Repository>,
    /// `[packages]`, if present.
    pub packages: Option<PackageSet>,
    /// `[[user]]`.
    pub users: Vec<User>,
    /// `[[group]]`.
    pub groups: Vec<Group>,
    /// `[ami]`: how `kiln register` makes an AMI of this image.
    pub ami: Option<Ami>,
    /// `[boot]`: the boot loader, kernel command line and generated initrd.
    pub boot: Option<Boot>,
    /// `[output]`: the formats a build writes (default: raw).
    pub output: Output,
    /// `[container]`: the OCI image's configuration.
    pub container: Option<Container>,
    /// `[services]`: units to enable, disable or mask, and the default target.
    pub services: Option<Services>,
    /// `[[test]]`: the checks `kiln test` runs on the booted image, in recipe order.
    pub tests: Vec<Test>,
}

/// Where a `[[repository]]` lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepoUri {
    /// `"host"`: the first source in this machine's APT configuration that serves the suite.
    Host,
    /// An `http://`, `https://` or `file://` URL, without a trailing `/`.
    Url(String),
}

/// `[[repository]]`: a Debian archive, verified against `keyring`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repository {
    pub uri: RepoUri,
    pub suite: String,
    pub components: Vec<String>,
    /// Resolved against the recipe's directory; default the Debian archive keyring.
    pub keyring: PathBuf,
    pub pos: Pos,
}

/// The keyring used when a repository names none.
pub const DEFAULT_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// `[packages]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageSet {
    pub include: Vec<String>,
    /// Never installed, even as a dependency (resolution fails if one is needed).
    pub exclude: Vec<String>,
    /// Also install every `Priority: required` package.
    pub required: bool,
    pub pos: Pos,
}

/// `[[user]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: u32,
    /// The primary group; when the recipe gives none it is `uid`, and a same-named group is made.
    pub gid: u32,
    pub own_group: bool,
    /// Supplementary groups, by name.
    pub groups: Vec<String>,
    pub shell: String,
    pub home: String,
    /// A crypt(3) hash; `None` locks the password.
    pub password: Option<String>,
    pub ssh_authorized_keys: Vec<String>,
    pub pos: Pos,
}

/// `[[group]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    pub gid: u32,
    pub pos: Pos,
}
