//! Unpacking a `.deb` (deb(5): an `ar` archive of `debian-binary`, `control.tar.*` and
//! `data.tar.*`) into the tree, never onto the host.
//!
//! `data.tar` goes through the tree's tar import (`tree::unpack_tar`), so owners, modes, hard
//! links and symlinks land in the tree, times are clamped to `source_date_epoch`, merged-/usr
//! symlinks are followed, and hostile members are refused with the package and member named.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

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

fn decoder<'a>(name: &str, r: Box<dyn Read + 'a>) -> std::io::Result<Option<Box<dyn Read + 'a>>> {
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
pub fn unpack(
    path: &Path,
    package: &str,
    tree: &mut Tree,
    sde: Time,
    store: &ContentStore,
) -> Result<Unpacked> {
    let fail = |problem: String| PackageError::Deb {
        package: package.to_owned(),
        problem,
    };
    let f = File::open(path).map_err(|e| fail(format!("{}: {e}", path.display())))?;
    let mut ar = ar::Archive::new(BufReader::new(f));
    let mut out = Unpacked::default();
    let (mut seen_control, mut seen_data, mut seen_version) = (false, false, false);
    while let Some(entry) = ar.next_entry() {
        let entry = entry.map_err(|e| fail(format!("is not a valid ar archive: {e}")))?;
        let name = String::from_utf8_lossy(entry.header().identifier()).into_owned();
        let name = name.trim_end_matches('/').to_owned();
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
            let mut r = decoder(&name, Box::new(entry))
                .map_err(|e| fail(format!("{name}: {e}")))?
                .ok_or_else(|| fail(format!("has an unknown compression: {name}")))?;
            let names =
                unpack_tar(tree, sde, store, &mut r).map_err(|m| PackageError::DebMember {
                    package: package.to_owned(),
                    member: m.member,
                    problem: format!("{} ({})", m.problem, m.fix),
                })?;
            // The rest of the stream (tar padding) is part of the member; drain it.
            let _ = std::io::copy(&mut r, &mut std::io::sink());
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

fn read_control(r: &mut dyn Read, out: &mut Unpacked) -> std::io::Result<()> {
    let mut t = tar::Archive::new(r);
    for e in t.entries()? {
        let mut e = e?;
        if !e.header().entry_type().is_file() {
            continue;
        }
        let name = String::from_utf8_lossy(&e.path_bytes())
            .trim_start_matches("./")
            .to_owned();
        if name.contains('/') || e.size() > 64 << 20 {
            continue;
        }
        let mut buf = Vec::new();
        e.read_to_end(&mut buf)?;
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
    fn list_paths() {
        let n: Vec<Vec<u8>> = ["./", "./usr/", "./usr/bin/x"]
            .iter()
            .map(|s| s.as_bytes().to_vec())
            .collect();
        assert_eq!(super::list_paths(&n), ["/.", "/usr", "/usr/bin/x"]);
    }
}
