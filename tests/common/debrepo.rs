//! A Debian repository made at test time: tiny `.deb`s, a `Packages` index (plain and gzip),
//! and an `InRelease` signed with an OpenPGP key generated for the test. Served over `file://`
//! or over HTTP on 127.0.0.1 by a small thread.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};

use pgp::composed::{
    ArmorOptions, CleartextSignedMessage, KeyType, SecretKeyParamsBuilder, SignedPublicKey,
    SignedSecretKey,
};
use pgp::ser::Serialize;
use pgp::types::Password;
use sha2::{Digest, Sha256};

/// One member of a test package's data.tar.
#[derive(Clone, Debug)]
pub enum Member {
    File(&'static str, Vec<u8>, u32),
    Dir(&'static str),
    Symlink(&'static str, &'static str),
    HardLink(&'static str, &'static str),
    /// A member whose raw name is written as given (for hostile paths).
    RawFile(Vec<u8>, Vec<u8>),
    /// A header that claims this many bytes, with no data behind it.
    Claim(&'static str, u64),
}

#[derive(Clone, Debug)]
pub struct DebSpec {
    pub name: &'static str,
    pub version: &'static str,
    pub arch: &'static str,
    /// Extra control fields (`Depends`, `Provides`, ...).
    pub fields: Vec<(&'static str, &'static str)>,
    pub members: Vec<Member>,
    /// `data.tar.xz` (as Debian's own packages) instead of `data.tar.gz`.
    pub data_xz: bool,
}

impl DebSpec {
    pub fn new(name: &'static str, version: &'static str) -> Self {
        DebSpec {
            name,
            version,
            arch: "amd64",
            fields: vec![],
            members: vec![Member::File(
                Box::leak(format!("./usr/share/doc/{name}/marker").into_boxed_str()),
                format!("{name} {version}\n").into_bytes(),
                0o644,
            )],
            data_xz: false,
        }
    }
    pub fn field(mut self, k: &'static str, v: &'static str) -> Self {
        self.fields.push((k, v));
        self
    }
    pub fn member(mut self, m: Member) -> Self {
        self.members.push(m);
        self
    }
    pub fn control(&self) -> String {
        let mut c = format!(
            "Package: {}\nVersion: {}\nArchitecture: {}\nMaintainer: Test <t@example.invalid>\n",
            self.name, self.version, self.arch
        );
        for (k, v) in &self.fields {
            c.push_str(&format!("{k}: {v}\n"));
        }
        c.push_str("Description: test package\n a test\n");
        c
    }
}

fn header(path: &[u8], size: u64, mode: u32, kind: tar::EntryType) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    {
        let name = &mut h.as_old_mut().name;
        name[..path.len()].copy_from_slice(path);
    }
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(2_000_000_000);
    h.set_entry_type(kind);
    h.set_cksum();
    h
}

fn tarxz(members: &[(tar::Header, Vec<u8>)]) -> Vec<u8> {
    let xz = xz2::write::XzEncoder::new(Vec::new(), 1);
    let mut b = tar::Builder::new(xz);
    for (h, data) in members {
        b.append(h, &data[..]).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap()
}

fn targz(members: &[(tar::Header, Vec<u8>)]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut b = tar::Builder::new(gz);
    for (h, data) in members {
        b.append(h, &data[..]).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap()
}

/// The `.deb` bytes for `spec`.
pub fn build_deb(spec: &DebSpec) -> Vec<u8> {
    let control = spec.control().into_bytes();
    let ctl = targz(&[
        (header(b"./", 0, 0o755, tar::EntryType::Directory), vec![]),
        (
            header(
                b"./control",
                control.len() as u64,
                0o644,
                tar::EntryType::Regular,
            ),
            control,
        ),
    ]);
    let mut data = vec![(header(b"./", 0, 0o755, tar::EntryType::Directory), vec![])];
    for m in &spec.members {
        data.push(match m {
            Member::File(p, d, mode) => (
                header(p.as_bytes(), d.len() as u64, *mode, tar::EntryType::Regular),
                d.clone(),
            ),
            Member::RawFile(p, d) => (
                header(p, d.len() as u64, 0o644, tar::EntryType::Regular),
                d.clone(),
            ),
            Member::Claim(p, size) => (
                header(p.as_bytes(), *size, 0o644, tar::EntryType::Regular),
                vec![],
            ),
            Member::Dir(p) => (
                header(p.as_bytes(), 0, 0o755, tar::EntryType::Directory),
                vec![],
            ),
            Member::Symlink(p, t) | Member::HardLink(p, t) => {
                let kind = if matches!(m, Member::Symlink(..)) {
                    tar::EntryType::Symlink
                } else {
                    tar::EntryType::Link
                };
                let mut h = header(p.as_bytes(), 0, 0o777, kind);
                h.set_link_name(t).unwrap();
                h.set_cksum();
                (h, vec![])
            }
        });
    }
    let (data_name, data) = match spec.data_xz {
        true => ("data.tar.xz", tarxz(&data)),
        false => ("data.tar.gz", targz(&data)),
    };
    // ar(5) as dpkg-deb writes it: the magic, then per member a 60-byte header (name, mtime,
    // uid, gid, octal mode, decimal size, "`\n") and the data, padded to an even length.
    let mut out = b"!<arch>\n".to_vec();
    for (name, body) in [
        ("debian-binary", b"2.0\n".to_vec()),
        ("control.tar.gz", ctl),
        (data_name, data),
    ] {
        let h = format!(
            "{name:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
            0,
            0,
            0,
            100644,
            body.len()
        );
        assert_eq!(h.len(), 60);
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(&body);
        if body.len() % 2 == 1 {
            out.push(b'\n');
        }
    }
    out
}

pub fn sha256(b: &[u8]) -> String {
    kiln::util::hex(&Sha256::digest(b))
}

/// A repository on disk with its own signing key.
pub struct Repo {
    pub dir: tempfile::TempDir,
    pub suite: String,
    key: SignedSecretKey,
}

impl Repo {
    pub fn new(suite: &str) -> Repo {
        let mut p = SecretKeyParamsBuilder::default();
        p.key_type(KeyType::Ed25519Legacy)
            .can_certify(true)
            .can_sign(true)
            .primary_user_id("kiln test repository <repo@example.invalid>".into());
        let key = p.build().unwrap().generate(rand::thread_rng()).unwrap();
        Repo {
            dir: tempfile::tempdir().unwrap(),
            suite: suite.to_owned(),
            key,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn file_uri(&self) -> String {
        format!("file://{}", self.path().display())
    }

    /// Writes the public key (binary) to `path`.
    pub fn write_keyring(&self, path: &Path) {
        let public = SignedPublicKey::from(self.key.clone());
        let mut f = std::fs::File::create(path).unwrap();
        public.to_writer(&mut f).unwrap();
    }

    /// Writes every package, the index and a signed InRelease. `codename` may differ from the
    /// suite (as bookworm's `Suite: oldstable`).
    pub fn publish(&self, debs: &[DebSpec]) {
        self.publish_with(debs, &self.suite.clone(), |_| {})
    }

    pub fn publish_with(
        &self,
        debs: &[DebSpec],
        codename: &str,
        tweak_index: impl Fn(&mut String),
    ) {
        let root = self.path();
        let pool = root.join("pool/main");
        std::fs::create_dir_all(&pool).unwrap();
        let mut index = String::new();
        for d in debs {
            let bytes = build_deb(d);
            let file = format!("{}_{}_{}.deb", d.name, d.version, d.arch);
            std::fs::write(pool.join(&file), &bytes).unwrap();
            index.push_str(&d.control());
            index.push_str(&format!(
                "Priority: optional\nFilename: pool/main/{file}\nSize: {}\nSHA256: {}\n\n",
                bytes.len(),
                sha256(&bytes)
            ));
        }
        tweak_index(&mut index);
        let dists = root.join("dists").join(&self.suite);
        let bin = dists.join("main/binary-amd64");
        std::fs::create_dir_all(&bin).unwrap();
        let plain = index.into_bytes();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&plain).unwrap();
        let gz = gz.finish().unwrap();
        std::fs::write(bin.join("Packages"), &plain).unwrap();
        std::fs::write(bin.join("Packages.gz"), &gz).unwrap();
        let release = format!(
            "Origin: kiln-test\nSuite: testing-{0}\nCodename: {codename}\nArchitectures: amd64\nComponents: main\n\
             SHA256:\n {1} {2} main/binary-amd64/Packages\n {3} {4} main/binary-amd64/Packages.gz\n",
            self.suite,
            sha256(&plain),
            plain.len(),
            sha256(&gz),
            gz.len()
        );
        std::fs::write(dists.join("Release"), &release).unwrap();
        std::fs::write(dists.join("InRelease"), self.sign(&release)).unwrap();
    }

    pub fn sign(&self, text: &str) -> String {
        let msg = CleartextSignedMessage::sign(
            rand::thread_rng(),
            text,
            &self.key.primary_key,
            &Password::empty(),
        )
        .unwrap();
        msg.to_armored_string(ArmorOptions::default()).unwrap()
    }

    pub fn deb_path(&self, d: &DebSpec) -> PathBuf {
        self.path()
            .join(format!("pool/main/{}_{}_{}.deb", d.name, d.version, d.arch))
    }
}

/// What [`serve_with`]'s hook may answer instead of the file.
pub enum Reply {
    /// `302 Found` to this Location.
    Redirect(String),
    /// `200 OK` with no length and a body of zeros that never ends.
    Endless,
}

/// Serves `root` over HTTP/1.0 on 127.0.0.1 from a background thread; returns the base URL.
pub fn serve(root: PathBuf) -> String {
    serve_with(root, |_| None)
}

/// [`serve`], asking `hook` first about every request path.
pub fn serve_with(
    root: PathBuf,
    hook: impl Fn(&str) -> Option<Reply> + Send + Sync + 'static,
) -> String {
    let hook = std::sync::Arc::new(hook);
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let root = root.clone();
            let hook = hook.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut line = String::new();
                if r.read_line(&mut line).is_err() {
                    return;
                }
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" || h == "\n" {
                        break;
                    }
                }
                let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
                match hook(&path) {
                    Some(Reply::Redirect(to)) => {
                        let _ = write!(
                            s,
                            "HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        );
                        return;
                    }
                    Some(Reply::Endless) => {
                        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
                        let zeros = [0u8; 65536];
                        while s.write_all(&zeros).is_ok() {}
                        return;
                    }
                    None => {}
                }
                let file = root.join(path.trim_start_matches('/'));
                match std::fs::File::open(&file) {
                    Ok(mut f) if !path.contains("..") && file.is_file() => {
                        let mut body = Vec::new();
                        f.read_to_end(&mut body).unwrap();
                        let _ = write!(
                            s,
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        );
                        let _ = s.write_all(&body);
                    }
                    _ => {
                        let _ = s.write_all(
                            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        );
                    }
                }
            });
        }
    });
    url
}
