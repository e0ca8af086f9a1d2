//! Debian packages against a repository made at test time (signed with a key generated here),
//! served over file:// and over HTTP on 127.0.0.1.

mod common;

use common::debrepo::{DebSpec, Member, Repo};
use kiln::disk::assemble::Contents;
use kiln::packages::{self, Options, PackageError};
use kiln::pipeline::{self, BuildError, Prepared};
use kiln::tree::{Kind, Tree};
use std::path::{Path, PathBuf};

struct Setup {
    repo: Repo,
    dir: tempfile::TempDir,
    cache: PathBuf,
}

fn setup(debs: &[DebSpec]) -> Setup {
    let repo = Repo::new("kilntest");
    repo.publish(debs);
    let dir = tempfile::tempdir().unwrap();
    repo.write_keyring(&dir.path().join("key.gpg"));
    let cache = dir.path().join("cache");
    Setup { repo, dir, cache }
}

fn universe() -> Vec<DebSpec> {
    vec![
        DebSpec::new("app", "1.0-1").field(
            "Depends",
            "libfoo (>= 2), libfoo (<< 3~), mta | default-mta",
        ),
        DebSpec::new("libfoo", "1.5-1"),
        DebSpec::new("libfoo", "2.1-1")
            .member(Member::File(
                "./usr/lib/libfoo.so.2",
                b"\x7fELF".to_vec(),
                0o644,
            ))
            .member(Member::Symlink("./usr/lib/libfoo.so", "libfoo.so.2")),
        DebSpec::new("libfoo", "3.0~rc1-1"),
        DebSpec::new("postfix", "3.7-1").field("Provides", "mta, default-mta"),
        DebSpec::new("exim", "4.96-1").field("Provides", "mta"),
        DebSpec::new("awk-user", "1").field("Pre-Depends", "awk"),
        DebSpec::new("gawk", "1").field("Provides", "awk"),
        DebSpec::new("mawk", "1")
            .field("Provides", "awk")
            .field("Priority", "required"),
        DebSpec::new("busybox", "1.35-1")
            .member(Member::File("./bin/busybox", b"#!bb\n".to_vec(), 0o755))
            .member(Member::HardLink("./bin/sh", "./bin/busybox")),
        DebSpec::new("versioned-user", "1").field("Depends", "virt-thing (>= 2)"),
        DebSpec::new("virt-old", "1").field("Provides", "virt-thing (= 1)"),
        DebSpec::new("virt-new", "1").field("Provides", "virt-thing (= 2)"),
        DebSpec::new("enemy", "1").field("Conflicts", "libfoo"),
        DebSpec::new("wants-enemy", "1").field("Depends", "enemy"),
        DebSpec::new("breaker", "1").field("Breaks", "app (<< 2)"),
        DebSpec::new("wants-breaker", "1").field("Depends", "app, breaker"),
        DebSpec::new("any-user", "1").field("Pre-Depends", "libfoo:any"),
        DebSpec::new("noarch", "1").field("Depends", "missing-thing"),
        DebSpec::new("ess", "1").field("Essential", "yes"),
        DebSpec::new("req", "1")
            .field("Priority", "required")
            .field("Multi-Arch", "same"),
        DebSpec {
            arch: "all",
            ..DebSpec::new("docs", "1")
        },
    ]
}

fn recipe_text(uri: &str, include: &[&str], exclude: &[&str]) -> String {
    let q = |v: &[&str]| {
        v.iter()
            .map(|s| format!("\"{s}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let image = common::recipe::image("pkgtest", "1", "64MiB");
    let root = common::recipe::ROOT;
    format!(
        r#"{image}{root}[[repository]]
uri = "{uri}"
suite = "kilntest"
keyring = "key.gpg"

[packages]
include = [{}]
exclude = [{}]

[[user]]
name = "alice"
uid = 1000
ssh_authorized_keys = ["ssh-ed25519 AAAA alice@test"]

[[file]]
path = "/usr/share/doc/app/marker"
content = "recipe wins\n"
"#,
        q(include),
        q(exclude)
    )
}

fn write_recipe(s: &Setup, uri: &str, include: &[&str], exclude: &[&str]) -> PathBuf {
    let p = s.dir.path().join("pkgtest.toml");
    std::fs::write(&p, recipe_text(uri, include, exclude)).unwrap();
    p
}

fn opts(s: &Setup) -> Options {
    Options {
        cache: s.cache.clone(),
        apt_dir: s.dir.path().join("no-apt"),
        now: Some(1_700_000_000),
        progress: false,
    }
}

fn prepare(s: &Setup, recipe: &Path, locked: bool) -> Result<Prepared, BuildError> {
    // The test's repository is a file:// directory beside the recipe's: a host path.
    pipeline::prepare_trusted(recipe, locked, &opts(s), &host_paths())
}

fn root_tree(p: &Prepared) -> &Tree {
    p.contents
        .iter()
        .find_map(|c| match c {
            Contents::Ext4(t) => Some(t),
            _ => None,
        })
        .unwrap()
}

/// The node at an absolute path (no symlink following).
fn lookup<'a>(t: &'a Tree, path: &str) -> Option<&'a kiln::tree::Node> {
    let mut at = Tree::ROOT;
    for c in path.split('/').filter(|c| !c.is_empty()) {
        at = t.child(at, c.as_bytes())?;
    }
    Some(t.node(at))
}

fn file_text(t: &Tree, path: &str) -> String {
    match &lookup(t, path)
        .unwrap_or_else(|| panic!("{path} missing"))
        .kind
    {
        Kind::File(c) => {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut c.open().unwrap(), &mut s).unwrap();
            s
        }
        k => panic!("{path} is {k:?}"),
    }
}

fn names(p: &Prepared) -> Vec<String> {
    p.packages
        .iter()
        .map(|p| format!("{}={}", p.name, p.version))
        .collect()
}

#[test]
fn resolves_alternatives_versions_provides_and_installs() {
    let s = setup(&universe());
    // app first: it pins libfoo below 3~, which any-user's `libfoo:any` then accepts.
    let r = write_recipe(
        &s,
        &s.repo.file_uri(),
        &["app", "busybox", "versioned-user", "any-user", "docs"],
        &[],
    );
    let p = prepare(&s, &r, false).unwrap();
    assert_eq!(
        names(&p),
        [
            "any-user=1",
            "app=1.0-1",
            "busybox=1.35-1",
            "docs=1",
            "exim=4.96-1",
            "libfoo=2.1-1",
            "versioned-user=1",
            "virt-new=1"
        ]
    );
    let t = root_tree(&p);
    // Merged /usr: /bin/busybox went to /usr/bin, the hard link too.
    assert!(matches!(lookup(t, "/bin").unwrap().kind, Kind::Symlink(ref l) if l == b"usr/bin"));
    assert_eq!(file_text(t, "/usr/bin/busybox"), "#!bb\n");
    assert_eq!(lookup(t, "/usr/bin/busybox").unwrap().meta.mode, 0o755);
    let bb = t.child(
        t.child(t.child(Tree::ROOT, b"usr").unwrap(), b"bin")
            .unwrap(),
        b"busybox",
    );
    let sh = t.child(
        t.child(t.child(Tree::ROOT, b"usr").unwrap(), b"bin")
            .unwrap(),
        b"sh",
    );
    assert_eq!(bb, sh, "hard link kept");
    // mtimes clamped to source_date_epoch.
    assert_eq!(
        lookup(t, "/usr/bin/busybox").unwrap().meta.mtime.secs,
        1_700_000_000
    );
    // The recipe's own file overrides the package's.
    assert_eq!(file_text(t, "/usr/share/doc/app/marker"), "recipe wins\n");
    // dpkg database.
    let status = file_text(t, "/var/lib/dpkg/status");
    assert!(
        status.starts_with("Package: any-user\nStatus: install ok installed\n"),
        "{status}"
    );
    assert!(status.contains("Package: libfoo\nStatus: install ok installed\nVersion: 2.1-1\n"));
    let list = file_text(t, "/var/lib/dpkg/info/busybox.list");
    assert_eq!(
        list,
        "/.\n/usr/share/doc/busybox/marker\n/bin/busybox\n/bin/sh\n"
    );
    // Accounts: no base-passwd here, so root plus the recipe's user.
    let passwd = file_text(t, "/etc/passwd");
    assert_eq!(
        passwd,
        "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n"
    );
    assert_eq!(file_text(t, "/etc/group"), "root:x:0:\nalice:x:1000:\n");
    let home = lookup(t, "/home/alice").unwrap();
    assert_eq!(
        (home.meta.mode, home.meta.uid, home.meta.gid),
        (0o700, 1000, 1000)
    );
    let keys = lookup(t, "/home/alice/.ssh/authorized_keys").unwrap();
    assert_eq!((keys.meta.mode, keys.meta.uid), (0o600, 1000));
    assert!(file_text(t, "/etc/fstab").contains(" / ext4 "));
    assert_eq!(file_text(t, "/etc/machine-id"), "");
}

#[test]
fn exclude_conflicts_breaks_and_missing_report_the_chain() {
    let s = setup(&universe());
    let uri = s.repo.file_uri();
    // `mta` is provided by exim and postfix: by name, exim; excluding it gives postfix.
    let r = write_recipe(&s, &uri, &["any-user"], &[]);
    let p = prepare(&s, &r, false).unwrap();
    assert_eq!(
        names(&p),
        ["any-user=1", "libfoo=3.0~rc1-1"],
        "highest version"
    );
    let r = write_recipe(&s, &uri, &["app"], &["exim"]);
    let p = prepare(&s, &r, false).unwrap();
    assert!(
        names(&p).contains(&"postfix=3.7-1".to_string()),
        "{:?}",
        names(&p)
    );
    // Excluding libfoo leaves app unsatisfiable; the chain names app.
    let r = write_recipe(&s, &uri, &["app"], &["libfoo"]);
    let e = prepare(&s, &r, false).err().unwrap().to_string();
    assert!(
        e.contains("libfoo (>= 2)") && e.contains("excluded") && e.contains("app <- the recipe"),
        "{e}"
    );
    // Conflicts.
    let r = write_recipe(&s, &uri, &["app", "wants-enemy"], &[]);
    let e = prepare(&s, &r, false).err().unwrap().to_string();
    assert!(
        e.contains("enemy") && e.contains("conflicts with libfoo"),
        "{e}"
    );
    // Breaks.
    let r = write_recipe(&s, &uri, &["wants-breaker"], &[]);
    let e = prepare(&s, &r, false).err().unwrap().to_string();
    assert!(
        e.contains("breaker") && e.contains("breaks app (<< 2)"),
        "{e}"
    );
    // A dependency nothing provides.
    let r = write_recipe(&s, &uri, &["noarch"], &[]);
    let e = prepare(&s, &r, false).err().unwrap().to_string();
    assert!(
        e.contains("no package is or provides missing-thing") && e.contains("noarch"),
        "{e}"
    );
}

#[test]
fn over_http_with_lock_and_offline_warm_cache() {
    let s = setup(&universe());
    let url = common::debrepo::serve(s.repo.path().to_owned());
    let r = write_recipe(&s, &url, &["app"], &[]);
    let fresh = prepare(&s, &r, false).unwrap();
    // Lock twice: identical bytes.
    let recipe = kiln::recipe::Recipe::load_with(&r, &host_paths()).unwrap();
    let (lp, _) = packages::lock_recipe(&recipe, &opts(&s)).unwrap();
    let first = std::fs::read(&lp).unwrap();
    packages::lock_recipe(&recipe, &opts(&s)).unwrap();
    assert_eq!(first, std::fs::read(&lp).unwrap());
    let text = String::from_utf8(first).unwrap();
    assert!(
        text.contains("name = \"libfoo\"") && text.contains("repository = \"kilntest\""),
        "{text}"
    );
    assert!(!text.contains("127.0.0.1"), "no host in the lock");
    // Warm cache + lock: a dead URL still builds, and gives the same packages.
    let dead = write_recipe(&s, "http://127.0.0.1:9", &["app"], &[]);
    assert_eq!(dead, r);
    let locked = prepare(&s, &r, true).unwrap();
    assert_eq!(locked.packages, fresh.packages);
    // A changed package set is refused under --locked.
    write_recipe(&s, "http://127.0.0.1:9", &["app", "busybox"], &[]);
    let e = prepare(&s, &r, true).err().unwrap().to_string();
    assert!(
        e.contains("no longer matches") && e.contains("busybox"),
        "{e}"
    );
    // Cold cache and dead URL: the fetch error names the URL.
    std::fs::remove_dir_all(&s.cache).unwrap();
    write_recipe(&s, "http://127.0.0.1:9", &["app"], &[]);
    let e = prepare(&s, &r, true).err().unwrap().to_string();
    assert!(
        e.contains("127.0.0.1:9") && e.contains("cannot fetch"),
        "{e}"
    );
}

#[test]
fn bad_signature_is_refused() {
    let s = setup(&universe());
    let inrel = s.repo.path().join("dists/kilntest/InRelease");
    let t = std::fs::read_to_string(&inrel).unwrap();
    std::fs::write(&inrel, t.replace("Origin: kiln-test", "Origin: kiln-tesT")).unwrap();
    let r = write_recipe(&s, &s.repo.file_uri(), &["app"], &[]);
    let e = prepare(&s, &r, false).err().unwrap();
    assert!(
        matches!(e, BuildError::Packages(PackageError::BadSignature { .. })),
        "{e}"
    );
    // Signed by another key.
    let other = Repo::new("kilntest");
    std::fs::write(
        &inrel,
        other.sign(&std::fs::read_to_string(s.repo.path().join("dists/kilntest/Release")).unwrap()),
    )
    .unwrap();
    let e = prepare(&s, &r, false).err().unwrap().to_string();
    assert!(e.contains("does not verify against any key"), "{e}");
}

#[test]
fn wrong_index_and_deb_digests_name_expected_and_actual() {
    let s = setup(&universe());
    let r = write_recipe(&s, &s.repo.file_uri(), &["busybox"], &[]);
    // Packages.gz replaced after signing.
    let pz = s
        .repo
        .path()
        .join("dists/kilntest/main/binary-amd64/Packages.gz");
    let good = std::fs::read(&pz).unwrap();
    std::fs::write(&pz, b"tampered").unwrap();
    let e = prepare(&s, &r, false).err().unwrap().to_string();
    assert!(
        e.contains("Packages.gz")
            && e.contains(&common::debrepo::sha256(&good))
            && e.contains(&common::debrepo::sha256(b"tampered")),
        "{e}"
    );
    std::fs::write(&pz, &good).unwrap();
    // A .deb replaced after the index was signed.
    let bb = universe()
        .into_iter()
        .find(|d| d.name == "busybox")
        .unwrap();
    let deb = s.repo.deb_path(&bb);
    let orig = std::fs::read(&deb).unwrap();
    std::fs::write(&deb, b"evil").unwrap();
    let e = prepare(&s, &r, false).err().unwrap().to_string();
    assert!(
        e.contains("busybox_1.35-1_amd64.deb")
            && e.contains(&common::debrepo::sha256(&orig))
            && e.contains(&common::debrepo::sha256(b"evil")),
        "{e}"
    );
}

#[test]
fn hostile_debs_are_refused_naming_package_and_member() {
    for (member, want) in [
        (
            Member::RawFile(b"../../etc/evil".to_vec(), b"x".to_vec()),
            "..",
        ),
        (
            Member::RawFile(b"/etc/evil".to_vec(), b"x".to_vec()),
            "absolute",
        ),
        (
            Member::Symlink("./usr/escape", "../../../../tmp"),
            "would leave the image's tree",
        ),
    ] {
        let mut evil = DebSpec::new("evil", "1").member(member.clone());
        if matches!(member, Member::Symlink(..)) {
            evil = evil.member(Member::File("./usr/escape/x", b"x".to_vec(), 0o644));
        }
        let s = setup(&[evil]);
        let r = write_recipe(&s, &s.repo.file_uri(), &["evil"], &[]);
        let e = prepare(&s, &r, false).err().expect("refused").to_string();
        assert!(
            e.contains("package evil: member") && e.contains(want),
            "{e}"
        );
    }
}

#[test]
fn recipe_errors_are_positioned() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("r.toml");
    let base = "[image]\nname = \"x\"\nversion = \"1\"\narch = \"x86_64\"\nsize = \"64MiB\"\n";
    std::fs::write(&p, format!("{base}[packages]\ninclude = [\"a\"]\n")).unwrap();
    let e = kiln::recipe::Recipe::load(&p).unwrap_err().to_string();
    assert!(
        e.contains(":6:1: [packages] is given but there is no [[repository]]"),
        "{e}"
    );
    std::fs::write(
        &p,
        format!("{base}[[repository]]\nuri = \"ftp://x\"\nsuite = \"s\"\n"),
    )
    .unwrap();
    let e = kiln::recipe::Recipe::load(&p).unwrap_err().to_string();
    assert!(
        e.contains(":7:7: repository uri \"ftp://x\" is not supported; expected"),
        "{e}"
    );
    std::fs::write(
        &p,
        format!("{base}[[repository]]\nuri = \"host\"\nsuite = \"s\"\nkeyring = \"nope.gpg\"\n"),
    )
    .unwrap();
    let e = kiln::recipe::Recipe::load(&p).unwrap_err().to_string();
    assert!(
        e.contains(":9:11: keyring") && e.contains("does not exist"),
        "{e}"
    );
    std::fs::write(&p, format!("{base}[[user]]\nname = \"Bad\"\nuid = 5\n")).unwrap();
    let e = kiln::recipe::Recipe::load(&p).unwrap_err().to_string();
    assert!(e.contains(":7:8: user name \"Bad\" is not allowed"), "{e}");
}

#[test]
fn host_source_missing_names_the_suite() {
    let s = setup(&universe());
    let r = write_recipe(&s, "host", &["app"], &[]);
    let e = prepare(&s, &r, false).err().unwrap().to_string();
    assert!(e.contains("\"kilntest\""), "{e}");
}

#[test]
fn required_adds_essential_and_required_packages() {
    let s = setup(&universe());
    let r = write_recipe(&s, &s.repo.file_uri(), &["docs"], &[]);
    let t = std::fs::read_to_string(&r).unwrap();
    std::fs::write(&r, t.replace("exclude = [", "required = true\nexclude = [")).unwrap();
    let p = prepare(&s, &r, false).unwrap();
    assert_eq!(names(&p), ["docs=1", "ess=1", "mawk=1", "req=1"]);
    // dpkg names the files of a Multi-Arch: same package <name>:<arch>.
    assert!(lookup(root_tree(&p), "/var/lib/dpkg/info/req:amd64.list").is_some());
    // Builds are deterministic: the same recipe gives the same manifest packages and status.
    let q = prepare(&s, &r, false).unwrap();
    assert_eq!(
        file_text(root_tree(&p), "/var/lib/dpkg/status"),
        file_text(root_tree(&q), "/var/lib/dpkg/status")
    );
}

/// The resolution is kept in the cache under the indexes' digests and the request: the same
/// index and request answer from the cache, a republished index or a changed request resolve
/// anew.
#[test]
fn resolution_is_cached_per_index_digest() {
    let s = setup(&universe());
    let r = write_recipe(&s, &s.repo.file_uri(), &["app"], &[]);
    let version = |p: &Prepared, n: &str| {
        p.packages
            .iter()
            .find(|i| i.name == n)
            .map(|i| i.version.clone())
    };
    let first = prepare(&s, &r, false).unwrap();
    assert_eq!(version(&first, "libfoo").as_deref(), Some("2.1-1"));
    let resolved = s.cache.join("resolved");
    let entries = || std::fs::read_dir(&resolved).unwrap().count();
    assert_eq!(entries(), 1);
    let again = prepare(&s, &r, false).unwrap();
    assert_eq!(again.packages, first.packages);
    assert_eq!(entries(), 1);
    // The answer really comes from the cache: point the kept libfoo at 1.5-1 (a real package
    // of the repository, so the fetch still verifies) and that is what gets installed.
    let kept = std::fs::read_dir(&resolved)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let old = DebSpec::new("libfoo", "1.5-1");
    let old_deb = std::fs::read(s.repo.deb_path(&old)).unwrap();
    let text = std::fs::read_to_string(&kept).unwrap();
    let new = DebSpec::new("libfoo", "2.1-1");
    let new_deb = std::fs::read(s.repo.deb_path(&new)).unwrap();
    let edited = text
        .replace("\"2.1-1\"", "\"1.5-1\"")
        .replace("libfoo_2.1-1_", "libfoo_1.5-1_")
        .replace(
            &common::debrepo::sha256(&new_deb),
            &common::debrepo::sha256(&old_deb),
        )
        .replace(
            &format!("size = {}", new_deb.len()),
            &format!("size = {}", old_deb.len()),
        );
    assert_ne!(edited, text);
    std::fs::write(&kept, edited).unwrap();
    let from_cache = prepare(&s, &r, false).unwrap();
    assert_eq!(version(&from_cache, "libfoo").as_deref(), Some("1.5-1"));
    std::fs::write(&kept, text).unwrap();

    // A new libfoo in a republished index: a new key, a new answer.
    let mut debs = universe();
    debs.push(DebSpec::new("libfoo", "2.2-1"));
    s.repo.publish(&debs);
    let newer = prepare(&s, &r, false).unwrap();
    assert_eq!(version(&newer, "libfoo").as_deref(), Some("2.2-1"));
    assert_eq!(entries(), 2);
    // A changed request under the same index is not answered from the cache either.
    let r = write_recipe(&s, &s.repo.file_uri(), &["app", "busybox"], &[]);
    let other = prepare(&s, &r, false).unwrap();
    assert_eq!(version(&other, "busybox").as_deref(), Some("1.35-1"));
    assert_eq!(version(&other, "libfoo").as_deref(), Some("2.2-1"));
    assert_eq!(entries(), 3);
}

/// An xz-compressed data.tar is kept decompressed (zstd) in the cache, named by the .deb's
/// sha256, and later builds read it instead: the same image, byte for byte. A damaged copy fails
/// the build naming the package, is removed, and the next build decodes the .deb again.
#[test]
fn xz_package_data_is_kept_decompressed_and_reused() {
    let blob: Vec<u8> = (0..400_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    let big = DebSpec {
        data_xz: true,
        ..DebSpec::new("bigpkg", "1")
    }
    .member(Member::File("./usr/lib/big.bin", blob, 0o644))
    .member(Member::Symlink("./usr/lib/big.link", "big.bin"));
    let s = setup(std::slice::from_ref(&big));
    let r = write_recipe(&s, &s.repo.file_uri(), &["bigpkg"], &[]);
    let build = |name: &str| {
        let out = s.dir.path().join(name);
        pipeline::build(
            &r,
            pipeline::BuildOptions {
                output: Some(out.clone()),
                packages: Some(opts(&s)),
                trust: host_paths(),
                ..Default::default()
            },
        )
        .map(|o| o.manifest.image.unwrap().blocks.unwrap().sha256)
    };
    let deb = s.repo.deb_path(&big);
    let kept = s.cache.join("data-tar").join(format!(
        "{}.tar.zst",
        common::debrepo::sha256(&std::fs::read(&deb).unwrap())
    ));
    let first = build("a.raw").unwrap();
    assert!(kept.is_file());
    // The kept copy is the package's data.tar exactly, as dpkg-deb and zstd read them.
    let want = common::run_ok(std::process::Command::new("sh").arg("-c").arg(format!(
        "dpkg-deb --fsys-tarfile {} | sha256sum",
        deb.display()
    )));
    let got = common::run_ok(
        std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("zstd -dc {} | sha256sum", kept.display())),
    );
    assert_eq!(got, want);
    assert_eq!(build("b.raw").unwrap(), first);

    // Cut short: the build fails naming the package and the copy, and removes it.
    let bytes = std::fs::read(&kept).unwrap();
    std::fs::write(&kept, &bytes[..bytes.len() / 2]).unwrap();
    let e = build("c.raw").err().unwrap().to_string();
    assert!(e.contains("bigpkg") && e.contains("is damaged"), "{e}");
    assert!(e.contains(&kept.display().to_string()), "{e}");
    assert!(!kept.exists(), "{e}");
    assert!(!s.dir.path().join("c.raw").exists());
    assert_eq!(build("d.raw").unwrap(), first);
    assert!(kept.is_file());
}

/// `--allow-host-paths`: the test's `file://` repository lies outside the recipe's directory.
fn host_paths() -> kiln::recipe::Trust {
    kiln::recipe::Trust {
        host_paths: true,
        ..Default::default()
    }
}
