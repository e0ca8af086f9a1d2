//! Unpacking a `.deb` (deb(5): an `ar` archive of `debian-binary`, `control.tar.*` and
//! `data.tar.*`) into the tree, never onto the host.
//!
//! `data.tar` goes through the tree's tar import (`tree::unpack_tar`), so owners, modes, hard
//! links and symlinks land in the tree, times are clamped to `source_date_epoch`, merged-/usr
//! symlinks are followed, and hostile members are refused with the package and member named.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use super::error::{PackageError, Result};
use crate::tree::{unpack_tar, ContentStore, Time, Tree};

/// What dpkg keeps about an unpacked package (`/var/lib/dpkg/info/` and `status`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unpacked {
    /// The `control` file's text.
    pub control: String,
    /// Other members of `control.tar`, by name (`md5sums`, `conffiles`, `postinst`, ...).
    pub info: Vec<(String, Vec<u8>)>,
    /// Every path `data.tar` holds, as dpkg's `.list` file writes them (`/.`, `/usr`, ...).
    pub files: Vec<String>,
}

type Stream<'a> = Box<dyn Read + Send + 'a>;

fn decoder<'a>(name: &str, r: Stream<'a>) -> std::io::Result<Option<Stream<'a>>> {
    Ok(Some(if name.ends_with(".xz") {
        Box::new(xz2::read::XzDecoder::new_multi_decoder(r))
    } else if name.ends_with(".zst") {
        Box::new(zstd::stream::read::Decoder::new(r)?)
    } else if name.ends_with(".gz") {
        Box::new(flate2::read::GzDecoder::new(r))
    } else if name.ends_with(".tar") {
        r
    } else {
        return Ok(None);
    }))
}

/// Unpacks the `.deb` at `path` (of `package`) into `tree`.
///
/// With `keep = Some(file)`, an xz-compressed `data.tar` is also kept decompressed (as zstd, with
/// its checksum) at `file`, and read from there when it exists: xz decoding is most of a warm
/// build's time (a kernel package is 26 MB of xz, 108 MB of tar), zstd decodes many times faster.
/// `file` must be named by the `.deb`'s verified sha256, so it always belongs to these bytes.
pub fn unpack(
    path: &Path,
    package: &str,
    keep: Option<&Path>,
    tree: &mut Tree,
    sde: Time,
    store: &ContentStore,
) -> Result<Unpacked> {
    let fail = |problem: String| PackageError::Deb {
        package: package.to_owned(),
        problem,
    };
    let f = File::open(path).map_err(|e| fail(format!("{}: {e}", path.display())))?;
    unpack_from(BufReader::new(f), package, keep, tree, sde, store)
}

/// [`unpack`], reading the `.deb` from `reader`.
pub fn unpack_from(
    reader: impl Read + Send,
    package: &str,
    keep: Option<&Path>,
    tree: &mut Tree,
    sde: Time,
    store: &ContentStore,
) -> Result<Unpacked> {
    let fail = |problem: String| PackageError::Deb {
        package: package.to_owned(),
        problem,
    };
    let mut ar = super::ar::Archive::new(reader);
    let mut out = Unpacked::default();
    let (mut seen_control, mut seen_data, mut seen_version) = (false, false, false);
    while let Some(entry) = ar.next_entry() {
        let entry = entry.map_err(|e| fail(format!("is not a valid ar archive: {e}")))?;
        let name = entry.name().to_owned();
        if name == "debian-binary" {
            let mut v = String::new();
            entry
                .take(64)
                .read_to_string(&mut v)
                .map_err(|e| fail(format!("debian-binary: {e}")))?;
            if !v.starts_with("2.") {
                return Err(fail(format!(
                    "has format version {:?}; expected 2.x",
                    v.trim()
                )));
            }
            seen_version = true;
        } else if name.starts_with("control.tar") {
            let mut r = decoder(&name, Box::new(entry))
                .map_err(|e| fail(format!("{name}: {e}")))?
                .ok_or_else(|| fail(format!("has an unknown compression: {name}")))?;
            read_control(&mut r, &mut out).map_err(|e| fail(format!("{name}: {e}")))?;
            seen_control = true;
        } else if name.starts_with("data.tar") {
            let kept = keep.filter(|_| name.ends_with(".xz"));
            let finished = Finished::default();
            let reused = kept.filter(|k| k.is_file());
            let r: Stream<'_> = match (reused, kept) {
                (Some(k), _) => {
                    let f = File::open(k).map_err(|e| fail(format!("{}: {e}", k.display())))?;
                    Box::new(
                        zstd::stream::read::Decoder::new(f)
                            .map_err(|e| fail(format!("{}: {e}", k.display())))?,
                    )
                }
                (None, k) => {
                    let r = decoder(&name, Box::new(entry))
                        .map_err(|e| fail(format!("{name}: {e}")))?
                        .ok_or_else(|| fail(format!("has an unknown compression: {name}")))?;
                    match k {
                        Some(k) => Box::new(
                            Keep::new(r, k, finished.clone())
                                .map_err(|e| fail(format!("{}: {e}", k.display())))?,
                        ),
                        None => r,
                    }
                }
            };
            // Decompression (xz, mostly) runs on its own thread, ahead of the tar reader and
            // the content store, which then never wait for it.
            let (names, drained) = read_ahead(r, |r| {
                let names = unpack_tar(tree, sde, store, r);
                // The rest of the stream (tar padding) is part of the member; drain it.
                (names, std::io::copy(r, &mut std::io::sink()))
            });
            if let Some(k) = reused.filter(|_| names.is_err() || drained.is_err()) {
                // A copy is kept only after its package unpacked whole, so a failure here means
                // the copy was damaged since. The next build decodes the .deb itself again.
                let _ = std::fs::remove_file(k);
                let why = match (&names, &drained) {
                    (Err(m), _) => format!("{}: {}", m.member, m.problem),
                    (_, Err(e)) => e.to_string(),
                    _ => String::new(),
                };
                return Err(fail(format!(
                    "its decompressed copy {} is damaged ({why}); it was removed, so build again",
                    k.display()
                )));
            }
            let names = names.map_err(|m| PackageError::DebMember {
                package: package.to_owned(),
                member: m.member,
                problem: format!("{} ({})", m.problem, m.fix),
            })?;
            drained.map_err(|e| fail(format!("{name}: {e}")))?;
            let done = finished.lock().ok().and_then(|mut d| d.take());
            if let (Some(t), Some(k)) = (done, kept) {
                if let Err(e) = t.persist(k) {
                    tracing::warn!("cannot keep {}: {}", k.display(), e.error);
                }
            }
            out.files = list_paths(&names);
            seen_data = true;
        }
    }
    if !(seen_version && seen_control && seen_data) {
        return Err(fail(
            "lacks debian-binary, control.tar or data.tar; it is not a binary package".into(),
        ));
    }
    Ok(out)
}

/// A reader that also writes what it reads, zstd-compressed, to a temp file beside `dest`. At
/// the end of the stream the finished temp file is handed to `done`; the caller renames it into
/// place only once the whole package unpacked (an error or an early stop keeps nothing).
struct Keep<'a> {
    inner: Stream<'a>,
    dest: PathBuf,
    out: Option<zstd::stream::write::Encoder<'static, tempfile::NamedTempFile>>,
    done: Finished,
}

type Finished = std::sync::Arc<std::sync::Mutex<Option<tempfile::NamedTempFile>>>;

impl<'a> Keep<'a> {
    fn new(inner: Stream<'a>, dest: &Path, done: Finished) -> std::io::Result<Self> {
        let dir = dest.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let tmp = tempfile::Builder::new()
            .prefix(".data-tar.")
            .tempfile_in(dir)?;
        let mut enc = zstd::stream::write::Encoder::new(tmp, 1)?;
        enc.include_checksum(true)?;
        Ok(Keep {
            inner,
            dest: dest.to_path_buf(),
            out: Some(enc),
            done,
        })
    }
}

impl Read for Keep<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::io::Write;
        let n = self.inner.read(buf)?;
        let kept = match self.out.as_mut() {
            Some(enc) if n > 0 => enc.write_all(&buf[..n]),
            Some(_) => match self.out.take() {
                Some(enc) => enc.finish().map(|t| {
                    if let Ok(mut d) = self.done.lock() {
                        *d = Some(t);
                    }
                }),
                None => Ok(()),
            },
            None => Ok(()),
        };
        if let Err(e) = kept {
            // Only a cache: the build goes on without it.
            tracing::warn!("cannot keep {}: {e}", self.dest.display());
            self.out = None;
        }
        Ok(n)
    }
}

/// Runs `f` over `src` while another thread reads `src` ahead, a few chunks at a time.
fn read_ahead<T>(src: Stream<'_>, f: impl FnOnce(&mut dyn Read) -> T) -> T {
    const CHUNK: usize = 256 << 10;
    std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<std::io::Result<Vec<u8>>>(8);
        s.spawn(move || {
            let mut src = src;
            loop {
                let mut buf = vec![0u8; CHUNK];
                let mut got = 0;
                let r = loop {
                    match src.read(&mut buf[got..]) {
                        Ok(0) => break Ok(()),
                        Ok(n) => {
                            got += n;
                            if got == CHUNK {
                                break Ok(());
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => break Err(e),
                    }
                };
                buf.truncate(got);
                let (msg, last) = match r {
                    Ok(()) => (Ok(buf), got < CHUNK),
                    Err(e) => {
                        if got > 0 && tx.send(Ok(buf)).is_err() {
                            break;
                        }
                        (Err(e), true)
                    }
                };
                // The reader stopping early (an error) drops `rx`; then stop too.
                if tx.send(msg).is_err() || last {
                    break;
                }
            }
        });
        let mut r = ChannelReader {
            rx,
            cur: Vec::new(),
            pos: 0,
        };
        f(&mut r)
    })
}

struct ChannelReader {
    rx: std::sync::mpsc::Receiver<std::io::Result<Vec<u8>>>,
    cur: Vec<u8>,
    pos: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.cur.len() {
            match self.rx.recv() {
                Ok(Ok(buf)) if buf.is_empty() => return Ok(0),
                Ok(Ok(buf)) => (self.cur, self.pos) = (buf, 0),
                Ok(Err(e)) => return Err(e),
                // The reading thread has finished: end of stream.
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.cur.len() - self.pos);
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// The most `control.tar` may hold in all (its files are kept in memory for dpkg's database;
/// the largest in Debian, a kernel's md5sums, is under 1 MiB).
const MAX_CONTROL: u64 = 64 << 20;

fn read_control(r: &mut dyn Read, out: &mut Unpacked) -> std::io::Result<()> {
    let mut t = tar::Archive::new(r);
    let mut total = 0u64;
    for e in t.entries()? {
        let mut e = e?;
        if !e.header().entry_type().is_file() {
            continue;
        }
        let name = String::from_utf8_lossy(&e.path_bytes())
            .trim_start_matches("./")
            .to_owned();
        if name.contains('/') {
            continue;
        }
        total = total.saturating_add(e.size());
        if total > MAX_CONTROL {
            return Err(std::io::Error::other(format!(
                "holds more than {MAX_CONTROL} bytes of files; no package's control data is that large"
            )));
        }
        // The header's size is a claim: read no more than it, and never trust it for capacity.
        let size = e.size();
        let mut buf = Vec::new();
        (&mut e).take(size).read_to_end(&mut buf)?;
        if name == "control" {
            out.control = String::from_utf8_lossy(&buf).into_owned();
        } else {
            out.info.push((name, buf));
        }
    }
    out.info.sort();
    Ok(())
}

/// dpkg's `.list` form: `./usr/bin/` → `/usr/bin`, `./` → `/.`.
fn list_paths(names: &[Vec<u8>]) -> Vec<String> {
    names
        .iter()
        .map(|n| {
            let s = String::from_utf8_lossy(n);
            let s = s.trim_start_matches("./").trim_start_matches('.');
            let s = s.trim_end_matches('/');
            if s.is_empty() {
                "/.".to_owned()
            } else {
                format!("/{}", s.trim_start_matches('/'))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn read_ahead_delivers_every_byte_and_the_error() {
        use std::io::Read;
        let data: Vec<u8> = (0..1_000_003u32).map(|i| (i % 251) as u8).collect();
        let got = super::read_ahead(Box::new(std::io::Cursor::new(data.clone())), |r| {
            let mut v = Vec::new();
            r.read_to_end(&mut v).map(|_| v)
        });
        assert_eq!(got.unwrap(), data);

        struct Fails(usize);
        impl Read for Fails {
            fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
                if self.0 == 0 {
                    return Err(std::io::Error::other("corrupt xz"));
                }
                let n = b.len().min(self.0).min(1000);
                self.0 -= n;
                Ok(n)
            }
        }
        let got = super::read_ahead(Box::new(Fails(700_000)), |r| {
            let mut v = Vec::new();
            r.read_to_end(&mut v).map(|_| v.len())
        });
        assert_eq!(got.unwrap_err().to_string(), "corrupt xz");
        // The consumer stopping early does not hang the reading thread.
        let first = super::read_ahead(Box::new(std::io::repeat(7).take(1 << 30)), |r| {
            let mut b = [0u8; 10];
            r.read_exact(&mut b).map(|()| b[0])
        });
        assert_eq!(first.unwrap(), 7);
    }

    /// A `.deb` whose `debian-binary` is valid, followed by a member named `name` of `size`
    /// bytes (of which `body` is present).
    fn deb_with(name: &str, size: u64, body: &[u8]) -> Vec<u8> {
        let h =
            |n: &str, s: u64| format!("{n:<16}{:<12}{:<6}{:<6}{:<8}{s:<10}`\n", 0, 0, 0, 100644);
        let mut a = b"!<arch>\n".to_vec();
        a.extend(h("debian-binary", 4).into_bytes());
        a.extend_from_slice(b"2.0\n");
        a.extend(h(name, size).into_bytes());
        a.extend_from_slice(body);
        a
    }

    fn unpack(data: &[u8]) -> String {
        let store = crate::tree::ContentStore::new().unwrap();
        let sde = crate::tree::Time::from_secs(0);
        let mut tree = crate::tree::Tree::new(crate::tree::Meta::new(0o755, 0, 0, sde));
        super::unpack_from(data, "p", None, &mut tree, sde, &store)
            .unwrap_err()
            .to_string()
    }

    /// The `ar` crate (kiln's reader before `packages::ar`) panicked on a GNU `/N` name without
    /// a name table, and allocated a `//` table or a BSD `#1/N` name of the size its header
    /// claimed: each is now a clear error naming the member (fuzz/corpus/ar/ar-gnu-name-index).
    #[test]
    fn long_name_members_are_errors_not_panics_or_allocations() {
        for (name, size) in [
            ("/123", 2),
            ("/0", 2),
            ("//", 9_999_999_998),
            ("#1/99999999", 2),
        ] {
            let e = unpack(&deb_with(name, size, b"ab"));
            assert!(e.contains("is not a valid ar archive"), "{name}: {e}");
            assert!(e.contains(&format!("member \"{name}\"")), "{name}: {e}");
        }
        let saved = include_bytes!("../../fuzz/corpus/ar/ar-gnu-name-index");
        let e = unpack(saved);
        assert!(e.contains("is not a valid ar archive"), "{e}");
    }

    #[test]
    fn a_truncated_member_is_an_error() {
        let e = unpack(&deb_with("control.tar", 1000, b"ab"));
        assert!(e.contains("ends inside member \"control.tar\""), "{e}");
    }

    #[test]
    fn list_paths() {
        let n: Vec<Vec<u8>> = ["./", "./usr/", "./usr/bin/x"]
            .iter()
            .map(|s| s.as_bytes().to_vec())
            .collect();
        assert_eq!(super::list_paths(&n), ["/.", "/usr", "/usr/bin/x"]);
    }
}
