//! OpenSSL's `X509_NAME_hash` of a certificate's subject (or a CRL's issuer): the first four
//! bytes, little-endian, of the SHA-1 of the name's canonical encoding (`x509_name_canon` in
//! OpenSSL's `crypto/x509/x_name.c`):
//!
//! - each RDN is a DER `SET` of `SEQUENCE { type, value }` entries, sorted as DER sorts a
//!   `SET OF`; the outer `SEQUENCE` of the name is left out; a name with no entry is empty;
//! - a value of a string type (UTF8, BMP, Universal, Printable, T61, IA5, Visible) becomes a
//!   `UTF8String`: converted to UTF-8 (T61 and the ASCII types byte by byte as Latin-1), leading
//!   and trailing whitespace dropped, each inner run of whitespace made one space, ASCII letters
//!   lowercased; other types are kept as they are.
//!
//! DER is read with the `der` crate; the certificate's outer structure (up to the subject) must
//! be well formed, as OpenSSL's decoder requires before it hashes anything.

use der::asn1::AnyRef;
use der::{Encode, Reader, SliceReader, Tag, TagNumber, Tagged};
use sha1::{Digest, Sha1};

type Result<T> = std::result::Result<T, String>;

fn err(e: der::Error) -> String {
    format!("malformed DER: {e}")
}

fn next<'a, R: Reader<'a>>(r: &mut R, want: Tag, what: &str) -> Result<AnyRef<'a>> {
    let any: AnyRef = r.decode().map_err(err)?;
    if any.tag() != want {
        return Err(format!("{what} is a {}, not a {want}", any.tag()));
    }
    Ok(any)
}

/// The first DER object of `data` (OpenSSL's `d2i` reads one and ignores what follows).
pub fn first_object(data: &[u8]) -> Result<&[u8]> {
    let mut r = SliceReader::new(data).map_err(err)?;
    r.tlv_bytes().map_err(err)
}

/// The subject name (the contents of its `SEQUENCE`) of a DER certificate.
pub fn cert_subject(der: &[u8]) -> Result<&[u8]> {
    let mut r = SliceReader::new(der).map_err(err)?;
    let cert = next(&mut r, Tag::Sequence, "the certificate")?;
    let mut c = SliceReader::new(cert.value()).map_err(err)?;
    let tbs = next(&mut c, Tag::Sequence, "tbsCertificate")?;
    next(&mut c, Tag::Sequence, "signatureAlgorithm")?;
    next(&mut c, Tag::BitString, "signatureValue")?;
    let mut t = SliceReader::new(tbs.value()).map_err(err)?;
    let version = Tag::ContextSpecific {
        constructed: true,
        number: TagNumber::N0,
    };
    if t.peek_tag().map_err(err)? == version {
        t.tlv_bytes().map_err(err)?;
    }
    next(&mut t, Tag::Integer, "serialNumber")?;
    next(&mut t, Tag::Sequence, "signature")?;
    next(&mut t, Tag::Sequence, "issuer")?;
    next(&mut t, Tag::Sequence, "validity")?;
    Ok(next(&mut t, Tag::Sequence, "subject")?.value())
}

/// The issuer name (the contents of its `SEQUENCE`) of a DER CRL.
pub fn crl_issuer(der: &[u8]) -> Result<&[u8]> {
    let mut r = SliceReader::new(der).map_err(err)?;
    let crl = next(&mut r, Tag::Sequence, "the CRL")?;
    let mut c = SliceReader::new(crl.value()).map_err(err)?;
    let tbs = next(&mut c, Tag::Sequence, "tbsCertList")?;
    next(&mut c, Tag::Sequence, "signatureAlgorithm")?;
    next(&mut c, Tag::BitString, "signatureValue")?;
    let mut t = SliceReader::new(tbs.value()).map_err(err)?;
    if t.peek_tag().map_err(err)? == Tag::Integer {
        t.tlv_bytes().map_err(err)?;
    }
    next(&mut t, Tag::Sequence, "signature")?;
    Ok(next(&mut t, Tag::Sequence, "issuer")?.value())
}

/// `isspace` in the C locale, which OpenSSL's `ossl_isspace` follows.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// One DER object with any single-byte tag (the `der` crate knows no UniversalString tag):
/// its tag byte and contents, which must fill `data` exactly.
fn raw_object(data: &[u8]) -> Result<(u8, &[u8])> {
    let bad = || "a malformed name entry value".to_string();
    let (&tag, rest) = data.split_first().ok_or_else(bad)?;
    if tag & 0x1f == 0x1f {
        return Err(bad());
    }
    let (&first, rest) = rest.split_first().ok_or_else(bad)?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n || rest[0] == 0 {
            return Err(bad());
        }
        let len = rest[..n].iter().fold(0usize, |v, &b| (v << 8) | b as usize);
        if len < 0x80 {
            return Err(bad());
        }
        (len, &rest[n..])
    };
    if rest.len() != len {
        return Err(bad());
    }
    Ok((tag, rest))
}

const UTF8_STRING: u8 = 0x0c;
const PRINTABLE_STRING: u8 = 0x13;
const T61_STRING: u8 = 0x14;
const IA5_STRING: u8 = 0x16;
const VISIBLE_STRING: u8 = 0x1a;
const UNIVERSAL_STRING: u8 = 0x1c;
const BMP_STRING: u8 = 0x1e;

/// A string value in canonical form (its `UTF8String` contents), or `None` when the type is
/// not one OpenSSL canonicalises.
fn canon_string(tag: u8, bytes: &[u8]) -> Result<Option<Vec<u8>>> {
    let text: String = match tag {
        UTF8_STRING => std::str::from_utf8(bytes)
            .map_err(|_| "a UTF8String that is not UTF-8".to_string())?
            .to_string(),
        PRINTABLE_STRING | T61_STRING | IA5_STRING | VISIBLE_STRING => {
            bytes.iter().map(|&b| b as char).collect()
        }
        BMP_STRING => {
            if bytes.len() % 2 != 0 {
                return Err("a BMPString of odd length".into());
            }
            bytes
                .chunks_exact(2)
                .map(|c| char::from_u32(u32::from(u16::from_be_bytes([c[0], c[1]]))))
                .collect::<Option<String>>()
                .ok_or("a BMPString holding a surrogate")?
        }
        UNIVERSAL_STRING => {
            if bytes.len() % 4 != 0 {
                return Err("a UniversalString whose length is not a multiple of 4".into());
            }
            bytes
                .chunks_exact(4)
                .map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
                .collect::<Option<String>>()
                .ok_or("a UniversalString holding an invalid character")?
        }
        _ => return Ok(None),
    };
    let b = text.as_bytes();
    let start = b.iter().position(|&c| !is_space(c)).unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|&c| !is_space(c))
        .map_or(start, |e| e + 1);
    let mut out = Vec::with_capacity(end - start);
    let mut i = start;
    while i < end {
        let c = b[i];
        if is_space(c) {
            out.push(b' ');
            while i < end && is_space(b[i]) {
                i += 1;
            }
            continue;
        }
        out.push(c.to_ascii_lowercase());
        i += 1;
    }
    Ok(Some(out))
}

fn tlv(tag: Tag, content: &[u8]) -> Result<Vec<u8>> {
    AnyRef::new(tag, content)
        .and_then(|a| a.to_der())
        .map_err(err)
}

/// The canonical encoding of a name given by its `SEQUENCE` contents.
pub fn canonical_name(name: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut r = SliceReader::new(name).map_err(err)?;
    while !r.is_finished() {
        let set = next(&mut r, Tag::Set, "a relative distinguished name")?;
        let mut s = SliceReader::new(set.value()).map_err(err)?;
        let mut entries = Vec::new();
        while !s.is_finished() {
            let entry = next(&mut s, Tag::Sequence, "a name entry")?;
            let mut e = SliceReader::new(entry.value()).map_err(err)?;
            let oid = next(&mut e, Tag::ObjectIdentifier, "a name entry's type")?;
            let oid = oid.to_der().map_err(err)?;
            let at = usize::try_from(e.position()).map_err(err)?;
            let value = &entry.value()[at..];
            let (tag, contents) = raw_object(value)?;
            let mut body = oid;
            match canon_string(tag, contents)? {
                Some(c) => body.extend_from_slice(&tlv(Tag::Utf8String, &c)?),
                None => body.extend_from_slice(value),
            }
            entries.push(tlv(Tag::Sequence, &body)?);
        }
        if entries.is_empty() {
            continue;
        }
        // DER orders a SET OF by the encodings (a shorter prefix first), as slices compare.
        entries.sort();
        out.extend_from_slice(&tlv(Tag::Set, &entries.concat())?);
    }
    Ok(out)
}

/// `X509_NAME_hash` of a name given by its `SEQUENCE` contents.
pub fn name_hash(name: &[u8]) -> Result<u32> {
    let canon = canonical_name(name)?;
    let d = Sha1::digest(&canon);
    Ok(u32::from_le_bytes([d[0], d[1], d[2], d[3]]))
}

/// SHA-1 of an object's DER: what `openssl rehash` compares to find duplicates.
pub fn fingerprint(der: &[u8]) -> [u8; 20] {
    Sha1::digest(der).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(oid: &[u8], tag: Tag, value: &[u8]) -> Vec<u8> {
        let mut body = tlv(Tag::ObjectIdentifier, oid).unwrap();
        body.extend(tlv(tag, value).unwrap());
        tlv(Tag::Sequence, &body).unwrap()
    }

    const CN: &[u8] = &[0x55, 0x04, 0x03];
    const O: &[u8] = &[0x55, 0x04, 0x0a];

    #[test]
    fn strings_are_canonicalised() {
        let name = [
            tlv(
                Tag::Set,
                &entry(CN, Tag::PrintableString, b"  Foo   BAR\tbaz "),
            )
            .unwrap(),
            tlv(Tag::Set, &entry(O, Tag::BmpString, &[0, b'A', 0, 0xe9])).unwrap(),
        ]
        .concat();
        let canon = canonical_name(&name).unwrap();
        let want = [
            tlv(Tag::Set, &entry(CN, Tag::Utf8String, b"foo bar baz")).unwrap(),
            tlv(Tag::Set, &entry(O, Tag::Utf8String, "a\u{e9}".as_bytes())).unwrap(),
        ]
        .concat();
        assert_eq!(canon, want);
        // T61 bytes are Latin-1; non-ASCII is never lowercased.
        let t61 = tlv(Tag::Set, &entry(CN, Tag::TeletexString, &[b'X', 0xc9])).unwrap();
        let c = canonical_name(&t61).unwrap();
        assert!(c.ends_with("x\u{c9}".as_bytes()), "{c:x?}");
    }

    #[test]
    fn multi_valued_rdns_sort_as_der_and_empty_names_hash_empty() {
        let a = entry(O, Tag::Utf8String, b"b");
        let b = entry(CN, Tag::Utf8String, b"a");
        let set = tlv(Tag::Set, &[a.clone(), b.clone()].concat()).unwrap();
        let canon = canonical_name(&set).unwrap();
        let mut sorted = [a, b];
        sorted.sort();
        assert_eq!(canon, tlv(Tag::Set, &sorted.concat()).unwrap());
        assert!(canonical_name(&[]).unwrap().is_empty());
        // SHA-1 of nothing is da39a3ee...: the hash is its first word, little-endian.
        assert_eq!(name_hash(&[]).unwrap(), 0xeea3_39da);
    }

    #[test]
    fn odd_input_is_an_error_not_a_panic() {
        assert!(cert_subject(b"").is_err());
        assert!(cert_subject(&[0x30, 0x80, 0, 0]).is_err());
        assert!(canonical_name(&[0x31, 0x03, 0x30, 0x01, 0x06]).is_err());
        let bad_utf8 = tlv(Tag::Set, &entry(CN, Tag::Utf8String, &[0xff])).unwrap();
        assert!(canonical_name(&bad_utf8).is_err());
        let odd_bmp = tlv(Tag::Set, &entry(CN, Tag::BmpString, &[0])).unwrap();
        assert!(canonical_name(&odd_bmp).is_err());
    }
}
