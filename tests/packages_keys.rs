//! InRelease signatures by keys gpgv would not accept: expired or revoked primary keys and
//! subkeys, subkeys not allowed to sign, a primary key whose flags do not allow signing. The
//! keys are made here with GnuPG in a temporary GNUPGHOME (at faked times), the signatures by
//! gpg itself, or by rPGP where gpg refuses to make them; gpgv, run at kiln's injected "now"
//! through faketime, is the oracle: kiln accepts exactly what gpgv reports as GOODSIG.

mod common;

use common::debrepo::{DebSpec, Repo};
use kiln::packages::Options;
use kiln::pipeline;
use std::path::{Path, PathBuf};
use std::process::Command;

/// kiln's clock in these tests, and gpgv's through faketime: 2023-11-14 22:13:20 UTC.
const NOW: i64 = 1_700_000_000;
const NOW_FAKETIME: &str = "2023-11-14 22:13:20";

struct Gpg {
    home: tempfile::TempDir,
}

impl Gpg {
    fn new() -> Gpg {
        let home = tempfile::Builder::new()
            .prefix("kiln-gpg-")
            .tempdir()
            .unwrap();
        Gpg { home }
    }

    /// gpg in this home, at `time` (gpg's `--faked-system-time`, e.g. 20200101T000000).
    fn run(&self, time: &str, args: &[&str]) -> String {
        let mut c = Command::new("gpg");
        c.env("GNUPGHOME", self.home.path())
            .env("TZ", "UTC")
            .args(["--batch", "--quiet", "--pinentry-mode", "loopback"])
            .args(["--passphrase", ""])
            .arg(format!("--faked-system-time={time}!"))
            .args(args);
        common::run_ok(&mut c)
    }

    /// Fingerprints of the key with `uid` (primary first, then subkeys in order).
    fn fingerprints(&self, uid: &str) -> Vec<String> {
        let out = self.run("20200101T000000", &["--with-colons", "--list-keys", uid]);
        out.lines()
            .filter_map(|l| l.strip_prefix("fpr:"))
            .map(|l| l.trim_matches(':').to_owned())
            .collect()
    }

    /// A primary key made on 2020-01-01 with `usage` and `expire` (gpg's quick-gen-key words).
    fn key(&self, uid: &str, usage: &str, expire: &str) -> String {
        self.run(
            "20200101T000000",
            &["--quick-gen-key", uid, "ed25519", usage, expire],
        );
        self.fingerprints(uid)[0].clone()
    }

    /// A subkey made on 2020-01-01; returns its fingerprint.
    fn subkey(&self, primary: &str, usage: &str, expire: &str) -> String {
        self.run(
            "20200101T000000",
            &["--quick-add-key", primary, "ed25519", usage, expire],
        );
        self.fingerprints(primary).pop().unwrap()
    }

    /// The clear-signed `text`, by exactly the key `fpr`, on 2020-06-01.
    fn clearsign(&self, fpr: &str, text: &Path) -> String {
        self.run(
            "20200601T000000",
            &[
                "--local-user",
                &format!("{fpr}!"),
                "--clearsign",
                "--output",
                "-",
                text.to_str().unwrap(),
            ],
        )
    }

    /// Revokes the primary key (the certificate gpg made with it), on 2021-01-01.
    fn revoke(&self, fpr: &str) {
        let cert = self.home.path().join(format!("openpgp-revocs.d/{fpr}.rev"));
        let text = std::fs::read_to_string(cert).unwrap();
        let armored = text.replace(":-----BEGIN", "-----BEGIN");
        let f = self.home.path().join("revoke.asc");
        std::fs::write(&f, armored).unwrap();
        self.run("20210101T000000", &["--import", f.to_str().unwrap()]);
    }

    /// Revokes subkey number `n` (1-based, in listing order) of `primary`, on 2021-01-01.
    fn revoke_subkey(&self, primary: &str, n: usize) {
        let mut c = Command::new("gpg");
        c.env("GNUPGHOME", self.home.path())
            .args(["--batch", "--pinentry-mode", "loopback", "--passphrase", ""])
            .args(["--faked-system-time=20210101T000000!", "--command-fd", "0"])
            .args(["--edit-key", primary])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = c.spawn().unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("key {n}\nrevkey\ny\n0\n\ny\nsave\n").as_bytes())
            .unwrap();
        common::ok(&child.wait_with_output().unwrap());
    }

    /// The public keyring of `uid`, binary.
    fn export(&self, uid: &str, to: &Path) {
        let mut c = Command::new("gpg");
        c.env("GNUPGHOME", self.home.path())
            .args(["--batch", "--export", "--output"])
            .arg(to)
            .arg(uid);
        common::run_ok(&mut c);
    }

    /// The secret key of `uid` as rPGP reads it (unprotected: made with an empty passphrase).
    fn secret(&self, uid: &str) -> pgp::composed::SignedSecretKey {
        use pgp::composed::Deserializable;
        let armored = self.run("20200101T000000", &["--armor", "--export-secret-keys", uid]);
        pgp::composed::SignedSecretKey::from_string(&armored)
            .unwrap()
            .0
    }
}

/// gpgv's verdict on `signed` with `keyring`, at [`NOW`]: the first `*SIG` status word.
fn gpgv(keyring: &Path, signed: &Path) -> String {
    let out = common::run(
        Command::new("faketime")
            .arg(NOW_FAKETIME)
            .args(["gpgv", "--status-fd", "1", "--keyring"])
            .arg(keyring)
            .arg(signed)
            .env("TZ", "UTC"),
    );
    let status = String::from_utf8_lossy(&out.stdout).into_owned();
    status
        .lines()
        .filter_map(|l| l.strip_prefix("[GNUPG:] "))
        .map(|l| l.split_whitespace().next().unwrap_or("").to_owned())
        .find(|w| w.ends_with("SIG") && w != "NEWSIG")
        .unwrap_or_else(|| format!("no verdict:\n{status}"))
}

/// A clear-signed text by rPGP with a secret (sub)key, dated 2020-06-01 (gpg will not sign with
/// a key that is not allowed to).
fn rpgp_sign(text: &str, key: &impl pgp::types::SigningKey) -> String {
    use pgp::composed::CleartextSignedMessage;
    use pgp::packet::{SignatureConfig, SignatureType, Subpacket, SubpacketData};
    use pgp::types::{Password, Timestamp};
    let mut config =
        SignatureConfig::from_key(rand::thread_rng(), key, SignatureType::Text).unwrap();
    config.hashed_subpackets = vec![
        Subpacket::regular(SubpacketData::SignatureCreationTime(Timestamp::from_secs(
            1_590_969_600,
        )))
        .unwrap(),
        Subpacket::regular(SubpacketData::IssuerFingerprint(key.fingerprint())).unwrap(),
    ];
    config.unhashed_subpackets =
        vec![Subpacket::regular(SubpacketData::IssuerKeyId(key.legacy_key_id())).unwrap()];
    CleartextSignedMessage::new(text, config, key, &Password::empty())
        .unwrap()
        .to_armored_string(Default::default())
        .unwrap()
}

struct Case {
    name: &'static str,
    keyring: PathBuf,
    inrelease: String,
    /// What kiln's error must say, or `None` when kiln (and gpgv) accept.
    refusal: Option<&'static str>,
}

fn build_with(repo: &Repo, dir: &Path, case: &Case) -> Result<(), String> {
    let inrel = repo.path().join("dists/kilntest/InRelease");
    std::fs::write(&inrel, &case.inrelease).unwrap();
    let recipe = dir.join(format!("{}.toml", case.name));
    std::fs::write(
        &recipe,
        format!(
            "[image]\nname = \"keys\"\nversion = \"1\"\narch = \"x86_64\"\nsize = \"64MiB\"\n\
             [[partition]]\nlabel = \"root\"\ntype = \"root\"\nsize = \"rest\"\nfilesystem = \"ext4\"\n\
             mount = \"/\"\n[[repository]]\nuri = \"{}\"\nsuite = \"kilntest\"\nkeyring = \"{}\"\n\
             [packages]\ninclude = [\"app\"]\n",
            repo.file_uri(),
            case.keyring.display()
        ),
    )
    .unwrap();
    let opts = Options {
        cache: dir.join(format!("cache-{}", case.name)),
        apt_dir: dir.join("no-apt"),
        now: Some(NOW),
        progress: false,
    };
    // The test's repository is a file:// directory beside the recipe's: a host path.
    let trust = kiln::recipe::Trust {
        host_paths: true,
        ..Default::default()
    };
    pipeline::prepare_trusted(&recipe, false, &opts, &trust)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[test]
fn keys_gpgv_refuses_are_refused() {
    let repo = Repo::new("kilntest");
    repo.publish(&[DebSpec::new("app", "1")]);
    let release_path = repo.path().join("dists/kilntest/Release");
    let release = std::fs::read_to_string(&release_path).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let g = Gpg::new();
    let ring = |uid: &str| {
        let p = dir.path().join(format!("{uid}.gpg"));
        g.export(uid, &p);
        p
    };

    let good = g.key("good <good@kiln.invalid>", "sign", "never");
    let expired = g.key("expired <expired@kiln.invalid>", "sign", "2021-01-01");
    let revoked = g.key("revoked <revoked@kiln.invalid>", "sign", "never");
    let certonly = g.key("subs <subs@kiln.invalid>", "cert", "never");
    let sub_good = g.subkey(&certonly, "sign", "never");
    let sub_expired = g.subkey(&certonly, "sign", "2021-01-01");
    let _sub_auth = g.subkey(&certonly, "auth", "never");
    let sub_revoked = g.subkey(&certonly, "sign", "never");

    let mut cases = vec![
        Case {
            name: "good",
            keyring: ring("good@kiln.invalid"),
            inrelease: g.clearsign(&good, &release_path),
            refusal: None,
        },
        Case {
            name: "expired",
            keyring: ring("expired@kiln.invalid"),
            inrelease: g.clearsign(&expired, &release_path),
            refusal: Some("expired at 2021-01-01"),
        },
        Case {
            name: "good-subkey",
            keyring: PathBuf::new(),
            inrelease: g.clearsign(&sub_good, &release_path),
            refusal: None,
        },
        Case {
            name: "expired-subkey",
            keyring: PathBuf::new(),
            inrelease: g.clearsign(&sub_expired, &release_path),
            refusal: Some("expired at 2021-01-01"),
        },
        Case {
            name: "revoked-subkey",
            keyring: PathBuf::new(),
            inrelease: g.clearsign(&sub_revoked, &release_path),
            refusal: Some("is revoked"),
        },
    ];
    // Signed while valid, revoked since.
    let revoked_sig = g.clearsign(&revoked, &release_path);
    g.revoke(&revoked);
    cases.push(Case {
        name: "revoked",
        keyring: ring("revoked@kiln.invalid"),
        inrelease: revoked_sig,
        refusal: Some("is revoked"),
    });
    g.revoke_subkey(&certonly, 4);
    // gpg will not sign with the authentication-only subkey, nor with the certify-only
    // primary key: rPGP does, with the secret keys gpg made.
    let secret = g.secret("subs@kiln.invalid");
    cases.push(Case {
        name: "auth-subkey",
        keyring: PathBuf::new(),
        inrelease: rpgp_sign(&release, &secret.secret_subkeys[2].key),
        refusal: Some("is not allowed to sign"),
    });
    cases.push(Case {
        name: "cert-only-primary",
        keyring: PathBuf::new(),
        inrelease: rpgp_sign(&release, &secret.primary_key),
        refusal: Some("is not allowed to sign"),
    });
    let subs = ring("subs@kiln.invalid");
    for c in &mut cases {
        if c.keyring.as_os_str().is_empty() {
            c.keyring = subs.clone();
        }
    }

    let mut report = Vec::new();
    for c in &cases {
        let signed = dir.path().join(format!("{}.InRelease", c.name));
        std::fs::write(&signed, &c.inrelease).unwrap();
        let oracle = gpgv(&c.keyring, &signed);
        let kiln = build_with(&repo, dir.path(), c);
        let fine = match (&kiln, c.refusal) {
            (Ok(()), None) => oracle == "GOODSIG",
            (Err(e), Some(why)) => {
                oracle != "GOODSIG"
                    && e.contains(why)
                    && e.contains("InRelease")
                    && e.contains(&c.keyring.display().to_string())
            }
            _ => false,
        };
        report.push(format!(
            "{}: gpgv {oracle}, kiln {kiln:?}{}",
            c.name,
            if fine { "" } else { "  <-- WRONG" }
        ));
    }
    let report = report.join("\n");
    eprintln!("{report}");
    assert!(!report.contains("WRONG"), "{report}");
}
