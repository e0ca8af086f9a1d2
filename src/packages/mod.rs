//! Debian packages: a native APT client that feeds the tree.
//!
//! ```text
//! sources (host) → release (InRelease, signature) → index (Packages) → resolve
//!   → fetch (.deb, cache) → deb (unpack into the tree) → dpkg (database) → etc (accounts, fstab)
//! ```
//! `ar` reads the `.deb` container for `deb`,
//! plus `lock` (`kiln lock`, `--locked`) and `sbom` (SPDX). Nothing here runs a maintainer
//! script or touches the host outside the cache.

pub mod ar;
pub mod deb;
pub mod dpkg;
mod error;
pub mod etc;
pub mod fetch;
pub mod index;
pub mod keys;
pub mod lock;
pub mod names;
mod put;
pub mod release;
pub mod resolve;
pub mod sbom;
pub mod sources;
pub mod version;

pub use error::{PackageError, Result};
pub use fetch::{default_cache_dir, Fetcher};

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::manifest::PackageInfo;
use crate::recipe::{Arch, Recipe, RepoUri, Repository};
use crate::tree::{ContentStore, Meta, Time, Tree};
use fetch::Want;
use resolve::{Request, Universe};

/// One package chosen for the image (also a lock file entry).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Chosen {
    pub name: String,
    pub version: String,
    pub architecture: String,
    /// The suite of the recipe's repository that lists it.
    pub repository: String,
    pub filename: String,
    pub sha256: String,
    pub size: u64,
    /// The source package's name.
    pub source: String,
}

/// How packages are found and fetched.
#[derive(Debug, Clone)]
pub struct Options {
    pub cache: PathBuf,
    /// The APT configuration directory `uri = "host"` reads (normally `/etc/apt`).
    pub apt_dir: PathBuf,
    /// The current time for `Valid-Until`, or `None` to skip that check. See
    /// [`release::check`]: it is the one wall-clock read, and it never reaches the image.
    pub now: Option<i64>,
    pub progress: bool,
}

impl Default for Options {
    fn default() -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()
            .and_then(|d| i64::try_from(d.as_secs()).ok());
        Options {
            cache: default_cache_dir(),
            apt_dir: PathBuf::from("/etc/apt"),
            now,
            progress: false,
        }
    }
}

/// Debian's name for the architecture.
pub fn debian_arch(a: Arch) -> &'static str {
    match a {
        Arch::X86_64 => "amd64",
        Arch::Aarch64 => "arm64",
    }
}

/// The repository's base URL (`host` looked up in the APT configuration).
pub fn base_uri(r: &Repository, apt_dir: &Path) -> Result<String> {
    match &r.uri {
        RepoUri::Url(u) => Ok(u.clone()),
        RepoUri::Host => Ok(sources::host_uri(apt_dir, &r.suite)?
            .trim_end_matches('/')
            .to_owned()),
    }
}

/// What the recipe asks for, as the resolver and the lock see it.
pub fn request(recipe: &Recipe) -> Request {
    match &recipe.packages {
        Some(p) => Request {
            include: p.include.clone(),
            exclude: p.exclude.clone(),
            required: p.required,
        },
        None => Request::default(),
    }
}

fn suites(recipe: &Recipe) -> Vec<String> {
    recipe
        .repositories
        .iter()
        .map(|r| r.suite.clone())
        .collect()
}

/// One verified `Packages` index in the cache.
pub struct IndexFile {
    /// The recipe's repository it belongs to.
    pub repo: usize,
    pub url: String,
    /// Its name under `dists/<suite>/`, e.g. `main/binary-amd64/Packages.xz`.
    pub file: String,
    pub sha256: String,
    pub path: PathBuf,
}

/// Fetches and verifies every repository's `InRelease` (signature, suite, `Valid-Until`) and
/// gets the `Packages` indexes it vouches for into the cache.
pub fn fetch_indexes(recipe: &Recipe, fetcher: &Fetcher, opts: &Options) -> Result<Vec<IndexFile>> {
    let arch = debian_arch(recipe.image.arch);
    let mut out = Vec::new();
    for (i, repo) in recipe.repositories.iter().enumerate() {
        let base = base_uri(repo, &opts.apt_dir)?;
        let dists = format!("{base}/dists/{}", repo.suite);
        let url = format!("{dists}/InRelease");
        let text = fetcher.get(&url, fetch::MAX_INRELEASE)?;
        let text = String::from_utf8(text).map_err(|_| PackageError::Release {
            url: url.clone(),
            problem: "is not UTF-8 text".into(),
        })?;
        let keys = release::load_keyring(&repo.keyring)?;
        let signed = release::verify(&text, &keys, &url, &repo.keyring, opts.now)?;
        let rel = release::parse(&signed).map_err(|problem| PackageError::Release {
            url: url.clone(),
            problem,
        })?;
        release::check(&rel, &repo.suite, opts.now, &url)?;
        for comp in &repo.components {
            let stem = format!("{comp}/binary-{arch}/Packages");
            let (file, (size, sha)) = ["xz", "gz"]
                .iter()
                .find_map(|ext| {
                    let f = format!("{stem}.{ext}");
                    rel.sha256.get(&f).map(|v| (f, v.clone()))
                })
                .ok_or_else(|| PackageError::Release {
                    url: url.clone(),
                    problem: format!(
                        "lists no {stem}.xz or {stem}.gz; is component {comp:?} served for {arch}?"
                    ),
                })?;
            let index_url = format!("{dists}/{file}");
            let path = fetcher.fetch(&Want {
                urls: vec![index_url.clone()],
                sha256: sha.clone(),
                size,
                label: file.clone(),
            })?;
            out.push(IndexFile {
                repo: i,
                url: index_url,
                file,
                sha256: sha,
                path,
            });
        }
    }
    Ok(out)
}

/// Decompresses and parses the indexes into one universe of packages.
pub fn load_universe(recipe: &Recipe, indexes: &[IndexFile]) -> Result<Universe> {
    let mut all = Vec::new();
    for ix in indexes {
        let text = decompress_index(&ix.path, &ix.file).map_err(|e| PackageError::Index {
            url: ix.url.clone(),
            problem: format!("cannot be decompressed: {e}"),
        })?;
        let pkgs =
            index::parse_packages(&text, ix.repo).map_err(|problem| PackageError::Index {
                url: ix.url.clone(),
                problem,
            })?;
        tracing::info!("{}: {} packages", ix.url, pkgs.len());
        all.extend(pkgs);
    }
    Ok(Universe::new(all, debian_arch(recipe.image.arch)))
}

fn decompress_index(path: &Path, name: &str) -> std::io::Result<String> {
    let f = std::fs::File::open(path)?;
    let mut r: Box<dyn Read> = if name.ends_with(".xz") {
        Box::new(xz2::read::XzDecoder::new_multi_decoder(
            std::io::BufReader::new(f),
        ))
    } else {
        Box::new(flate2::read::MultiGzDecoder::new(std::io::BufReader::new(
            f,
        )))
    };
    let mut s = String::new();
    r.read_to_string(&mut s)?;
    Ok(s)
}

/// Resolves the recipe's packages against the current indexes.
///
/// The answer is a pure function of the indexes' digests, the request, the architecture and
/// kiln's version, so it is kept in the cache under a key made of exactly those
/// (`resolved/<key>.lock`): a rebuild with unchanged indexes skips decompressing and parsing
/// them. A new index (a point release, a security update) is a new key.
pub fn resolve_fresh(recipe: &Recipe, fetcher: &Fetcher, opts: &Options) -> Result<Vec<Chosen>> {
    let indexes = fetch_indexes(recipe, fetcher, opts)?;
    let req = lock::LockedRequest::new(
        &request(recipe),
        debian_arch(recipe.image.arch),
        &suites(recipe),
    );
    let cached = fetcher
        .cache_dir()
        .join("resolved")
        .join(format!("{}.lock", resolution_key(&req, &indexes)));
    if let Ok(l) = lock::read(&cached) {
        if l.request == req {
            tracing::info!("resolution unchanged since {}", cached.display());
            return Ok(l.packages);
        }
    }
    let u = load_universe(recipe, &indexes)?;
    let picked = u.resolve(&request(recipe))?;
    let mut chosen: Vec<Chosen> = picked
        .into_iter()
        .map(|i| {
            let p = &u.packages[i];
            Chosen {
                name: p.name.clone(),
                version: p.version.clone(),
                architecture: p.architecture.clone(),
                repository: recipe.repositories[p.repo].suite.clone(),
                filename: p.filename.clone(),
                sha256: p.sha256.clone(),
                size: p.size,
                source: p.source.clone(),
            }
        })
        .collect();
    // The order a lock file keeps, so a cached answer is the same list.
    chosen.sort_by(|a, b| a.name.cmp(&b.name).then(a.version.cmp(&b.version)));
    let l = lock::Lock {
        request: req,
        packages: chosen,
    };
    let saved = std::fs::create_dir_all(cached.parent().unwrap_or(Path::new(".")))
        .map_err(|e| e.to_string())
        .and_then(|()| lock::write(&cached, &l).map_err(|e| e.to_string()));
    if let Err(e) = saved {
        tracing::warn!("cannot keep the resolution in the cache: {e}");
    }
    Ok(l.packages)
}

fn resolution_key(req: &lock::LockedRequest, indexes: &[IndexFile]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    // Bump the tag when the resolver's rules change.
    h.update(format!(
        "kiln-resolution-v1 {}\n",
        env!("CARGO_PKG_VERSION")
    ));
    h.update(toml::to_string(req).unwrap_or_default());
    for ix in indexes {
        h.update(format!("{}\t{}\t{}\n", ix.repo, ix.file, ix.sha256));
    }
    crate::util::hex(&h.finalize())
}

/// `kiln lock`: resolves and writes `<recipe stem>.lock` beside the recipe.
pub fn lock_recipe(recipe: &Recipe, opts: &Options) -> Result<(PathBuf, lock::Lock)> {
    let fetcher = Fetcher::new(opts.cache.clone());
    let chosen = resolve_fresh(recipe, &fetcher, opts)?;
    let l = lock::Lock {
        request: lock::LockedRequest::new(
            &request(recipe),
            debian_arch(recipe.image.arch),
            &suites(recipe),
        ),
        packages: chosen,
    };
    let path = lock::lock_path(&recipe.path);
    lock::write(&path, &l)?;
    Ok((path, l))
}

/// `--locked`: the lock's packages, after checking it still matches the recipe.
pub fn resolve_locked(recipe: &Recipe) -> Result<Vec<Chosen>> {
    let path = lock::lock_path(&recipe.path);
    let l = lock::read(&path)?;
    let now = lock::LockedRequest::new(
        &request(recipe),
        debian_arch(recipe.image.arch),
        &suites(recipe),
    );
    lock::check(&path, &l, &now)?;
    Ok(l.packages)
}

/// Gets every chosen `.deb` into the cache (verified); paths in the same order.
pub fn fetch_packages(
    recipe: &Recipe,
    chosen: &[Chosen],
    fetcher: &Fetcher,
    opts: &Options,
) -> Result<Vec<PathBuf>> {
    // Base URLs come from the recipe or the local APT configuration, never the network, so a
    // warm cache works with a dead mirror; a `host` that cannot be resolved only warns here.
    let mut wants = Vec::with_capacity(chosen.len());
    let bases: Vec<Option<String>> = recipe
        .repositories
        .iter()
        .map(|r| {
            base_uri(r, &opts.apt_dir)
                .map_err(|e| tracing::warn!("{e}"))
                .ok()
        })
        .collect();
    for c in chosen {
        let urls = recipe
            .repositories
            .iter()
            .zip(&bases)
            .filter(|(r, _)| r.suite == c.repository)
            .filter_map(|(_, b)| b.as_ref().map(|b| format!("{b}/{}", c.filename)))
            .collect();
        wants.push(Want {
            urls,
            sha256: c.sha256.clone(),
            size: c.size,
            label: c.name.clone(),
        });
    }
    fetcher.fetch_all(&wants, opts.progress)
}

/// A tree with the merged-/usr layout, every package unpacked (by name) and dpkg's database.
/// `keep_dir`: where xz-compressed package data is kept decompressed for later builds (see
/// [`deb::unpack`]); normally `data-tar/` in the cache.
pub fn install_packages(
    recipe: &Recipe,
    chosen: &[Chosen],
    debs: &[PathBuf],
    keep_dir: Option<&Path>,
    store: &ContentStore,
) -> Result<Tree> {
    let sde = Time::from_secs(recipe.image.source_date_epoch);
    let mut tree = Tree::new(Meta::new(0o755, 0, 0, sde));
    etc::merged_usr(&mut tree, recipe.image.arch, sde)?;
    let mut order: Vec<usize> = (0..chosen.len()).collect();
    order.sort_by(|&a, &b| chosen[a].name.cmp(&chosen[b].name));
    let mut unpacked = Vec::with_capacity(chosen.len());
    for i in order {
        // Named by the verified sha256 of the .deb it came from (see deb::unpack).
        let keep = keep_dir.map(|d| d.join(format!("{}.tar.zst", chosen[i].sha256)));
        let u = deb::unpack(
            &debs[i],
            &chosen[i].name,
            keep.as_deref(),
            &mut tree,
            sde,
            store,
        )?;
        unpacked.push(u);
    }
    let refs: Vec<&deb::Unpacked> = unpacked.iter().collect();
    dpkg::write_database(&mut tree, &refs, sde)?;
    Ok(tree)
}

/// The manifest's view of the installed packages, sorted by name.
pub fn package_infos(chosen: &[Chosen]) -> Vec<PackageInfo> {
    let mut v: Vec<PackageInfo> = chosen
        .iter()
        .map(|c| PackageInfo {
            name: c.name.clone(),
            version: c.version.clone(),
            architecture: c.architecture.clone(),
            sha256: c.sha256.clone(),
            source: c.source.clone(),
        })
        .collect();
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v
}
