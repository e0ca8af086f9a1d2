//! What OpenSSL's `PEM_X509_INFO_read_bio` finds in a file, which `openssl rehash` needs to be
//! exactly one certificate or CRL: PEM blocks read line by line as `PEM_read_bio` reads them
//! (`crypto/pem/pem_lib.c`), grouped as `crypto/pem/pem_info.c` groups them.
//!
//! - Text around the blocks is ignored; a block that starts and does not end properly, does not
//!   decode, or carries RFC 1421 headers (`Proc-Type:` and the like, which need a password or
//!   are refused) makes the whole file unreadable, as it does for OpenSSL.
//! - `CERTIFICATE`, `X509 CERTIFICATE` and `TRUSTED CERTIFICATE` blocks are certificates,
//!   `X509 CRL` a CRL, `... PRIVATE KEY` a key (which joins the certificate it follows or
//!   precedes); other blocks are passed over. A certificate or CRL whose DER kiln cannot read up
//!   to its subject (issuer) name also makes the file unreadable.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;

use super::x509;

/// A certificate or a CRL: its hash-link type, the name hash and the DER fingerprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub crl: bool,
    pub hash: u32,
    pub fingerprint: [u8; 20],
}

/// One `X509_INFO`: a certificate, a CRL and a key, each optional.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Info {
    pub cert: Option<Object>,
    pub crl: Option<Object>,
    pub key: bool,
}

/// `BIO_gets` into a 255-byte buffer: lines of at most 254 bytes, newline included.
fn gets_lines(data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let end = rest
            .iter()
            .take(254)
            .position(|&b| b == b'\n')
            .map(|p| p + 1)
            .unwrap_or(rest.len().min(254));
        out.push(&rest[..end]);
        rest = &rest[end..];
    }
    out
}

/// `sanitize_line` with `PEM_FLAG_EAY_COMPATIBLE`: trailing bytes up to space dropped, as a
/// signed C `char` compares (so bytes of 0x80 and up go too).
fn sanitize(line: &[u8]) -> &[u8] {
    let end = line
        .iter()
        .rposition(|&b| (b as i8) > b' ' as i8)
        .map_or(0, |p| p + 1);
    &line[..end]
}

/// One PEM block: its name (`CERTIFICATE`) and decoded data.
struct Block {
    name: Vec<u8>,
    data: Vec<u8>,
}

/// The PEM blocks. `Err` when OpenSSL would give up on the file.
fn blocks(data: &[u8]) -> Result<Vec<Block>, String> {
    let lines = gets_lines(data);
    let mut i = 0;
    let mut out = Vec::new();
    loop {
        // get_name: skip to a `-----BEGIN NAME-----` line; none left is the normal end.
        let name = loop {
            let Some(l) = lines.get(i) else {
                return Ok(out);
            };
            i += 1;
            let l = sanitize(l);
            if let Some(n) = l
                .strip_prefix(b"-----BEGIN ")
                .and_then(|r| r.strip_suffix(b"-----"))
            {
                break n.to_vec();
            }
        };
        // get_header_and_data.
        #[derive(PartialEq)]
        enum State {
            Maybe,
            In,
            Post,
        }
        let mut state = State::Maybe;
        // Lines before a blank line: a header if a blank line follows, else the data.
        let mut pre: Vec<u8> = Vec::new();
        let mut header: Vec<u8> = Vec::new();
        let mut body: Vec<u8> = Vec::new();
        let mut end = false;
        loop {
            let Some(raw) = lines.get(i) else {
                return Err("a PEM block without its END line".into());
            };
            i += 1;
            if state == State::Maybe && raw.contains(&b':') {
                state = State::In;
            }
            let l = sanitize(raw);
            if l.is_empty() {
                if state == State::Post {
                    return Err("a second blank line in a PEM block".into());
                }
                header = std::mem::take(&mut pre);
                state = State::Post;
                continue;
            }
            if let Some(rest) = l.strip_prefix(b"-----END ") {
                if rest.strip_prefix(&name[..]) != Some(b"-----") {
                    return Err("a PEM END line that does not match its BEGIN".into());
                }
                match state {
                    State::Maybe => body = std::mem::take(&mut pre),
                    State::In => header = std::mem::take(&mut pre),
                    State::Post => {}
                }
                break;
            }
            if end {
                return Err("a short PEM line before the end of the data".into());
            }
            let to = if state == State::Post {
                &mut body
            } else {
                &mut pre
            };
            to.extend_from_slice(l);
            to.push(b'\n');
            if state == State::Post {
                // After a header, lines must be 64 characters but the last.
                if l.len() > 64 {
                    return Err("a PEM line longer than 64 characters".into());
                }
                end = l.len() < 64;
            }
        }
        if !header.is_empty() {
            return Err(
                "a PEM block with RFC 1421 headers (encrypted, or refused by OpenSSL)".into(),
            );
        }
        let decoded = base64_decode(&body)?;
        if decoded.is_empty() {
            return Err("an empty PEM block".into());
        }
        out.push(Block {
            name,
            data: decoded,
        });
    }
}

/// `EVP_DecodeUpdate`/`EVP_DecodeFinal`: whitespace skipped, `-` ends the data, whole
/// four-character groups with at most two `=` at the end.
fn base64_decode(text: &[u8]) -> Result<Vec<u8>, String> {
    let mut chars = Vec::with_capacity(text.len());
    for &b in text {
        match b {
            b' ' | b'\t' | b'\r' | b'\n' => {}
            b'-' => break,
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'+' | b'/' | b'=' => chars.push(b),
            _ => return Err("a PEM block with a character that is not base64".into()),
        }
    }
    const ENGINE: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new()
            .with_decode_padding_mode(DecodePaddingMode::RequireCanonical)
            .with_decode_allow_trailing_bits(true),
    );
    ENGINE
        .decode(&chars)
        .map_err(|e| format!("a PEM block that does not decode: {e}"))
}

fn object(der: &[u8], crl: bool) -> Result<Object, String> {
    let tlv = x509::first_object(der)?;
    let name = if crl {
        x509::crl_issuer(tlv)?
    } else {
        x509::cert_subject(tlv)?
    };
    Ok(Object {
        crl,
        hash: x509::name_hash(name)?,
        fingerprint: x509::fingerprint(tlv),
    })
}

/// The `X509_INFO`s of a file, or why OpenSSL could not read it.
pub fn infos(data: &[u8]) -> Result<Vec<Info>, String> {
    let mut out = Vec::new();
    let mut cur = Info::default();
    for Block { name, data: der } in blocks(data)? {
        match &name[..] {
            b"CERTIFICATE" | b"X509 CERTIFICATE" | b"TRUSTED CERTIFICATE" => {
                if cur.cert.is_some() {
                    out.push(std::mem::take(&mut cur));
                }
                cur.cert = Some(object(&der, false)?);
            }
            b"X509 CRL" => {
                if cur.crl.is_some() {
                    out.push(std::mem::take(&mut cur));
                }
                cur.crl = Some(object(&der, true)?);
            }
            n if n.len() > b" PRIVATE KEY".len() && n.ends_with(b" PRIVATE KEY") => {
                if cur.key {
                    out.push(std::mem::take(&mut cur));
                }
                cur.key = true;
            }
            _ => {}
        }
    }
    if cur != Info::default() {
        out.push(cur);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pem(name: &str, der: &[u8]) -> String {
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN {name}-----\n{}\n-----END {name}-----\n",
            lines.join("\n")
        )
    }

    #[test]
    fn blocks_around_text() {
        let f = format!(
            "junk before\n{}between\n{}",
            pem("FOO", b"hello world, this is long enough to span lines? no"),
            pem("BAR", b"x")
        );
        let b = blocks(f.as_bytes()).unwrap();
        assert_eq!(b.len(), 2);
        assert_eq!(b[0].name, b"FOO");
        assert_eq!(b[1].data, b"x");
        assert!(blocks(b"nothing here").unwrap().is_empty());
    }

    #[test]
    fn broken_blocks_fail_the_file() {
        for bad in [
            "-----BEGIN X-----\naGVsbG8=\n",
            "-----BEGIN X-----\naGVsbG8=\n-----END Y-----\n",
            "-----BEGIN X-----\naGVsbG8\n-----END X-----\n",
            "-----BEGIN X-----\naGVs!G8=\n-----END X-----\n",
            "-----BEGIN X-----\nProc-Type: 4,ENCRYPTED\n\naGVsbG8=\n-----END X-----\n",
            "-----BEGIN X-----\n-----END X-----\n",
        ] {
            assert!(blocks(bad.as_bytes()).is_err(), "{bad}");
        }
        // CRLF line ends and trailing spaces are fine.
        let ok = "-----BEGIN X-----  \r\naGVs\r\nbG8=\r\n-----END X-----\r\n";
        assert_eq!(blocks(ok.as_bytes()).unwrap()[0].data, b"hello");
    }

    #[test]
    fn keys_join_certificates_and_unknown_blocks_are_passed_over() {
        let key = pem("RSA PRIVATE KEY", b"k");
        let other = pem("PUBLIC KEY", b"p");
        let infos_of = |s: String| infos(s.as_bytes()).unwrap();
        assert_eq!(infos_of(format!("{key}{other}")).len(), 1);
        assert!(infos_of(other.clone()).is_empty());
        // A certificate block that is not a certificate makes the file unreadable.
        assert!(infos(pem("CERTIFICATE", b"\x30\x00").as_bytes()).is_err());
    }
}
