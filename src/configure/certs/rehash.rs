//! `openssl rehash DIR` (OpenSSL 3.0's `apps/rehash.c`) on a directory of the tree: for each
//! file named `*.pem`, `*.crt`, `*.cer` or `*.crl` (any case) that holds exactly one certificate
//! or CRL, a symlink `HASH.N` (`HASH.rN` for a CRL) to it, `HASH` being `X509_NAME_hash` of the
//! subject (issuer) in 8 lowercase hex digits and `N` counting name collisions in file-name
//! order. A second file with the same DER (same SHA-1) is a duplicate and gets no link.
//! Existing hash links are kept when still right, renumbered or removed otherwise.

use std::collections::BTreeMap;

use crate::tree::{Kind, Time, Tree};

use super::super::files;
use super::pem;

/// `MAX_COLLISIONS`: links per hash.
const MAX_COLLISIONS: u16 = 256;
/// An entry that had no link (`~0` as an `unsigned short`).
const NO_ID: u16 = u16::MAX;

struct Entry {
    filename: Vec<u8>,
    old_id: u16,
    need_symlink: bool,
    fingerprint: [u8; 20],
}

#[derive(Default)]
struct Bucket {
    entries: Vec<Entry>,
    num_needed: u16,
}

/// What the rehash did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Links made: (link name, file name).
    pub linked: Vec<(String, String)>,
    /// Files passed over, with the reason OpenSSL gives.
    pub skipped: Vec<(String, String)>,
    pub removed: Vec<String>,
}

/// `handle_symlink`'s parse of an existing link's name: `XXXXXXXX.N` or `XXXXXXXX.rN`.
fn hash_link_name(name: &[u8]) -> Option<(bool, u32, u16)> {
    let hex = std::str::from_utf8(name.get(..8)?).ok()?;
    if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let hash = u32::from_str_radix(hex, 16).ok()?;
    let rest = name.get(8..)?.strip_prefix(b".")?;
    let (crl, digits) = match rest.first() {
        Some(b'r' | b'R') => (true, &rest[1..]),
        _ => (false, rest),
    };
    // strtoul: an empty number is 0; anything but digits after it disqualifies the name.
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let id = digits.iter().fold(0u64, |v, &d| {
        v.wrapping_mul(10).wrapping_add(u64::from(d - b'0'))
    });
    Some((crl, hash, id as u16))
}

fn add_entry(
    buckets: &mut BTreeMap<(bool, u32), Bucket>,
    key: (bool, u32),
    filename: &[u8],
    fingerprint: Option<[u8; 20]>,
    old_id: u16,
) -> Result<(), String> {
    let b = buckets.entry(key).or_default();
    let mut found = None;
    for (i, e) in b.entries.iter().enumerate() {
        if fingerprint.is_some_and(|f| f == e.fingerprint) {
            return Err(format!(
                "a duplicate of {}",
                String::from_utf8_lossy(&e.filename)
            ));
        }
        if e.filename == filename {
            found = Some(i);
            if fingerprint.is_none() {
                break;
            }
        }
    }
    let i = match found {
        Some(i) => i,
        None => {
            if b.num_needed >= MAX_COLLISIONS {
                return Err("more than 256 names with one hash".into());
            }
            b.entries.push(Entry {
                filename: filename.to_vec(),
                old_id: NO_ID,
                need_symlink: false,
                fingerprint: [0; 20],
            });
            b.entries.len() - 1
        }
    };
    let e = &mut b.entries[i];
    e.old_id = e.old_id.min(old_id);
    if let Some(f) = fingerprint {
        if !e.need_symlink {
            e.need_symlink = true;
            e.fingerprint = f;
            b.num_needed += 1;
        }
    }
    Ok(())
}

fn has_extension(name: &[u8]) -> bool {
    let Some(dot) = name.iter().rposition(|&b| b == b'.') else {
        return false;
    };
    let ext = name[dot + 1..].to_ascii_lowercase();
    matches!(&ext[..], b"pem" | b"crt" | b"cer" | b"crl")
}

fn link_name(crl: bool, hash: u32, id: u16) -> String {
    format!("{hash:08x}.{}{id}", if crl { "r" } else { "" })
}

/// Rehashes the directory `dir` of the tree (it must exist).
pub fn rehash(tree: &mut Tree, dir: &str, time: Time) -> Result<Outcome, String> {
    let mut out = Outcome::default();
    let id = crate::boot::tree_io::lookup(tree, dir).ok_or("no such directory")?;
    let names: Vec<Vec<u8>> = tree
        .children(id)
        .ok_or("not a directory")?
        .keys()
        .cloned()
        .collect();
    let mut buckets: BTreeMap<(bool, u32), Bucket> = BTreeMap::new();
    for name in names {
        let shown = String::from_utf8_lossy(&name).into_owned();
        let path = format!("{dir}/{shown}");
        let Some(child) = tree.child(id, &name) else {
            continue;
        };
        if let Kind::Symlink(target) = &tree.node(child).kind {
            if let Some((crl, hash, old)) = hash_link_name(&name) {
                let target = target.clone();
                if let Err(why) = add_entry(&mut buckets, (crl, hash), &target, None, old) {
                    out.skipped.push((shown, why));
                }
                continue;
            }
        }
        if !has_extension(&name) {
            continue;
        }
        let data = match files::read(tree, &path) {
            Ok(Some(d)) => d,
            Ok(None) => {
                out.skipped.push((shown, "cannot open it".into()));
                continue;
            }
            Err(e) => return Err(format!("{path}: {e}")),
        };
        let infos = match pem::infos(&data) {
            Ok(i) => i,
            Err(why) => {
                out.skipped.push((shown, why));
                continue;
            }
        };
        if infos.len() != 1 {
            out.skipped.push((
                shown,
                "it does not contain exactly one certificate or CRL".into(),
            ));
            continue;
        }
        let Some(obj) = infos[0].cert.clone().or_else(|| infos[0].crl.clone()) else {
            out.skipped
                .push((shown, "it holds a key without a certificate".into()));
            continue;
        };
        let key = (obj.crl, obj.hash);
        if let Err(why) = add_entry(&mut buckets, key, &name, Some(obj.fingerprint), NO_ID) {
            out.skipped.push((shown, why));
        }
    }
    for ((crl, hash), b) in buckets {
        let mut taken = vec![false; b.num_needed as usize];
        for e in &b.entries {
            if e.old_id < b.num_needed {
                taken[e.old_id as usize] = true;
            }
        }
        let mut next = 0usize;
        for e in &b.entries {
            if e.old_id < b.num_needed {
                continue;
            }
            if e.need_symlink {
                while taken.get(next) == Some(&true) {
                    next += 1;
                }
                let link = link_name(crl, hash, next as u16);
                files::put(
                    tree,
                    &format!("{dir}/{link}"),
                    files::symlink(&e.filename, time),
                    time,
                )?;
                if let Some(t) = taken.get_mut(next) {
                    *t = true;
                }
                out.linked
                    .push((link, String::from_utf8_lossy(&e.filename).into_owned()));
            } else {
                let link = link_name(crl, hash, e.old_id);
                if files::remove(tree, &format!("{dir}/{link}")) {
                    out.removed.push(link);
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_names() {
        assert_eq!(hash_link_name(b"0a1b2c3d.0"), Some((false, 0x0a1b2c3d, 0)));
        assert_eq!(
            hash_link_name(b"0A1B2C3D.r12"),
            Some((true, 0x0a1b2c3d, 12))
        );
        assert_eq!(hash_link_name(b"0a1b2c3d."), Some((false, 0x0a1b2c3d, 0)));
        assert_eq!(hash_link_name(b"0a1b2c3d.pem"), None);
        assert_eq!(hash_link_name(b"0a1b2c3g.0"), None);
        assert_eq!(link_name(true, 0xab, 1), "000000ab.r1");
        assert!(has_extension(b"x.PEM") && has_extension(b"a.b.crl"));
        assert!(!has_extension(b"ca-certificates.crt.new") && !has_extension(b"pem"));
    }

    #[test]
    fn collisions_number_in_order_and_duplicates_are_skipped() {
        let mut b = BTreeMap::new();
        add_entry(&mut b, (false, 1), b"a.pem", Some([1; 20]), NO_ID).unwrap();
        add_entry(&mut b, (false, 1), b"b.pem", Some([2; 20]), NO_ID).unwrap();
        assert!(
            add_entry(&mut b, (false, 1), b"c.pem", Some([1; 20]), NO_ID)
                .unwrap_err()
                .contains("a.pem")
        );
        let bucket = &b[&(false, 1)];
        assert_eq!(bucket.num_needed, 2);
        assert_eq!(bucket.entries.len(), 2);
    }
}
