//! Getting bytes from a repository (`http://`, `https://`, `file://`) and keeping verified files
//! in a content-addressed cache (`$KILN_CACHE`, default `~/.cache/kiln`), by SHA-256.
//!
//! A file is only ever moved into the cache after its digest matched, and it is hashed again
//! when used, so a corrupted cache entry is noticed and fetched again.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::error::{io_err, PackageError, Result};
use super::names;

/// How many downloads run at once: enough to hide latency without hammering a mirror.
const PARALLEL: usize = 4;

/// The most an `InRelease` may be, read before its signature is checked (Debian's are about
/// 150 KiB; the largest Ubuntu ones under 300 KiB). An unverified file cannot be trusted to end.
pub const MAX_INRELEASE: u64 = 16 << 20;

/// Redirects followed per request, each one checked (see [`same_origin`]).
const MAX_REDIRECTS: usize = 5;

/// The cache directory: `$KILN_CACHE`, else `$XDG_CACHE_HOME/kiln`, else `~/.cache/kiln`.
pub fn default_cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("KILN_CACHE") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("kiln");
    }
    let home = std::env::var_os("HOME").map_or_else(std::env::temp_dir, PathBuf::from);
    home.join(".cache").join("kiln")
}

/// Downloads and the cache they fill.
pub struct Fetcher {
    agent: ureq::Agent,
    cache: PathBuf,
}

/// One file to get into the cache: tried at each URL in turn.
#[derive(Debug, Clone)]
pub struct Want {
    pub urls: Vec<String>,
    pub sha256: String,
    pub size: u64,
    /// For progress and messages (a package name).
    pub label: String,
}

impl Fetcher {
    pub fn new(cache: PathBuf) -> Self {
        // Redirects are followed by `open`, which checks where each one leads.
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(20))
            .timeout_read(Duration::from_secs(60))
            .redirects(0)
            .build();
        Fetcher { agent, cache }
    }

    pub fn cache_dir(&self) -> &Path {
        &self.cache
    }

    /// A reader over the resource at `url`.
    pub fn open(&self, url: &str) -> Result<Box<dyn Read + Send>> {
        let fail = |problem: String| PackageError::Fetch {
            url: url.to_owned(),
            problem,
        };
        if let Some(path) = url.strip_prefix("file://") {
            let f = File::open(path).map_err(|e| fail(e.to_string()))?;
            return Ok(Box::new(f));
        }
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(fail(
                "unsupported scheme; expected http://, https:// or file://".into(),
            ));
        }
        let mut at = url.to_owned();
        for _ in 0..=MAX_REDIRECTS {
            let r = match self.agent.get(&at).call() {
                Ok(r) => r,
                Err(ureq::Error::Status(code, r)) => {
                    return Err(fail(format!("HTTP {code} {}", r.status_text())))
                }
                Err(e) => return Err(fail(e.to_string())),
            };
            if !(300..400).contains(&r.status()) {
                return Ok(Box::new(r.into_reader()));
            }
            let location = r.header("location").unwrap_or("").to_owned();
            let next = url::Url::parse(&at)
                .and_then(|base| base.join(&location))
                .map_err(|e| fail(format!("redirect to {location:?} is not a URL: {e}")))?;
            // The signature vouches for the bytes, not for where they come from; still, a
            // repository that sends kiln to another scheme or host is not the repository the
            // recipe named (and http → https → http games hide where a build's inputs live).
            if !same_origin(&at, &next) {
                return Err(fail(format!(
                    "redirected to {next}, which leaves the repository's scheme and host; \
                     give that URL as the repository's uri if it is the right one"
                )));
            }
            tracing::debug!("{at}: redirected to {next}");
            at = next.to_string();
        }
        Err(fail(format!("more than {MAX_REDIRECTS} redirects")))
    }

    /// The whole resource at `url`, in memory, refused if it is longer than `limit` bytes
    /// (for small files such as `InRelease`, read before anything vouches for them).
    pub fn get(&self, url: &str, limit: u64) -> Result<Vec<u8>> {
        let fail = |problem: String| PackageError::Fetch {
            url: url.to_owned(),
            problem,
        };
        let mut buf = Vec::new();
        self.open(url)?
            .take(limit + 1)
            .read_to_end(&mut buf)
            .map_err(|e| fail(e.to_string()))?;
        if buf.len() as u64 > limit {
            return Err(fail(format!(
                "is larger than {limit} bytes, more than such a file ever is; refused unread"
            )));
        }
        Ok(buf)
    }

    /// Where a file with this digest lives in the cache; `None` unless `sha256` is 64 lower-case
    /// hex digits (anything else could name a file outside the cache).
    pub fn cache_path(&self, sha256: &str) -> Option<PathBuf> {
        names::check_sha256(sha256).ok()?;
        Some(self.cache.join("sha256").join(sha256))
    }

    /// The cached file with this digest, if present and intact (a damaged one is removed).
    pub fn cached(&self, sha256: &str) -> Option<PathBuf> {
        let p = self.cache_path(sha256)?;
        let actual = hash_file(&p).ok()?;
        if actual == sha256 {
            return Some(p);
        }
        tracing::warn!(
            "cache entry {} is damaged (sha256 {actual}); fetching it again",
            p.display()
        );
        let _ = std::fs::remove_file(&p);
        None
    }

    /// Gets `want` into the cache (unless already there) and returns its path. Every URL is
    /// tried in order; a digest mismatch is an error naming the URL, expected and actual digest.
    pub fn fetch(&self, want: &Want) -> Result<PathBuf> {
        names::check_sha256(&want.sha256).map_err(|problem| PackageError::Fetch {
            url: want.label.clone(),
            problem,
        })?;
        if let Some(p) = self.cached(&want.sha256) {
            return Ok(p);
        }
        let dir = self.cache.join("sha256");
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let mut last = None;
        for url in &want.urls {
            match self.download(url, &dir, want) {
                Ok(p) => return Ok(p),
                Err(e @ (PackageError::Checksum { .. } | PackageError::TooLarge { .. })) => {
                    return Err(e)
                }
                Err(e) => {
                    tracing::debug!("{e}");
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| PackageError::Fetch {
            url: want.label.clone(),
            problem: "no repository to fetch it from".into(),
        }))
    }

    fn download(&self, url: &str, dir: &Path, want: &Want) -> Result<PathBuf> {
        // One byte past the size the index names is enough to know the file is not that file:
        // a mirror cannot make kiln fill the disk or spend an hour on an endless body.
        let mut r = self.open(url)?.take(want.size.saturating_add(1));
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io_err(dir))?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        let mut got = 0u64;
        loop {
            let n = match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(PackageError::Fetch {
                        url: url.to_owned(),
                        problem: e.to_string(),
                    })
                }
            };
            got += n as u64;
            if got > want.size {
                return Err(PackageError::TooLarge {
                    url: url.to_owned(),
                    size: want.size,
                });
            }
            h.update(&buf[..n]);
            tmp.write_all(&buf[..n]).map_err(io_err(tmp.path()))?;
        }
        let actual = crate::util::hex(&h.finalize());
        if actual != want.sha256 {
            return Err(PackageError::Checksum {
                url: url.to_owned(),
                expected: want.sha256.clone(),
                actual,
                what: "the file is not the one the signed index lists",
            });
        }
        let dest = self.cache.join("sha256").join(&want.sha256);
        tmp.persist(&dest).map_err(|e| PackageError::Io {
            path: dest.clone(),
            source: e.error,
        })?;
        Ok(dest)
    }

    /// Fetches everything in `wants` with [`PARALLEL`] threads; paths come back in input order.
    /// Every failure is gathered; the first is returned after all downloads stopped.
    pub fn fetch_all(&self, wants: &[Want], progress: bool) -> Result<Vec<PathBuf>> {
        let bar = progress.then(|| {
            let total: u64 = wants.iter().map(|w| w.size).sum();
            let b = indicatif::ProgressBar::new(total);
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "fetching packages [{bar:40}] {bytes}/{total_bytes} {msg}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            b
        });
        let next = AtomicUsize::new(0);
        let results: Mutex<Vec<Option<Result<PathBuf>>>> =
            Mutex::new((0..wants.len()).map(|_| None).collect());
        std::thread::scope(|s| {
            for _ in 0..PARALLEL.min(wants.len()) {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(w) = wants.get(i) else { break };
                    let r = self.fetch(w);
                    if let Some(b) = &bar {
                        b.inc(w.size);
                        b.set_message(w.label.clone());
                    }
                    if let Ok(mut g) = results.lock() {
                        g[i] = Some(r);
                    }
                });
            }
        });
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        let results = results.into_inner().unwrap_or_default();
        let mut out = Vec::with_capacity(wants.len());
        for r in results {
            out.push(r.unwrap_or_else(|| {
                Err(PackageError::Fetch {
                    url: String::new(),
                    problem: "download thread stopped".into(),
                })
            })?);
        }
        Ok(out)
    }
}

/// Whether `next` has the scheme, host and port of `from` (a redirect may only move within the
/// repository's own server).
fn same_origin(from: &str, next: &url::Url) -> bool {
    url::Url::parse(from).is_ok_and(|f| {
        f.scheme() == next.scheme()
            && f.host_str() == next.host_str()
            && f.port_or_known_default() == next.port_or_known_default()
    })
}

/// Hex SHA-256 of a file.
pub fn hash_file(p: &Path) -> io::Result<String> {
    let mut f = File::open(p)?;
    let mut h = Sha256::new();
    io::copy(&mut f, &mut h)?;
    Ok(crate::util::hex(&h.finalize()))
}
