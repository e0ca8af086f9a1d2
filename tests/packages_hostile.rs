//! Hostile repository inputs: digests that would name paths, files larger than their index says,
//! oversized or redirected InRelease, and signatures by keys gpgv would not accept. Each input
//! is refused with a clear error and nothing outside kiln's own cache is touched.

mod common;

use common::debrepo::{DebSpec, Repo};
use kiln::packages::Options;
use kiln::pipeline::{self, BuildError, Prepared};
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

fn write_recipe(s: &Setup, uri: &str, include: &[&str]) -> PathBuf {
    let inc = include
        .iter()
        .map(|s| format!("\"{s}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let p = s.dir.path().join("hostile.toml");
    std::fs::write(
        &p,
        format!(
            "[image]\nname = \"hostile\"\nversion = \"1\"\narch = \"x86_64\"\nsize = \"64MiB\"\n\
             source_date_epoch = 1700000000\n\n[[partition]]\nlabel = \"root\"\ntype = \"root\"\n\
             size = \"rest\"\nfilesystem = \"ext4\"\nmount = \"/\"\n\n[[repository]]\n\
             uri = \"{uri}\"\nsuite = \"kilntest\"\nkeyring = \"key.gpg\"\n\n[packages]\n\
             include = [{inc}]\n"
        ),
    )
    .unwrap();
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

/// A lock file whose sha256 is a path: kiln used it to name a cache entry, found that entry's
/// digest wrong and removed "the damaged entry", i.e. any file the lock pointed at.
#[test]
fn a_lock_digest_that_is_a_path_deletes_nothing() {
    let s = setup(&[DebSpec::new("app", "1")]);
    let r = write_recipe(&s, &s.repo.file_uri(), &["app"]);
    let recipe = kiln::recipe::Recipe::load_with(&r, &host_paths()).unwrap();
    let (lock, l) = kiln::packages::lock_recipe(&recipe, &opts(&s)).unwrap();
    let victim = s.dir.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    std::fs::remove_dir_all(&s.cache).unwrap();
    std::fs::create_dir_all(s.cache.join("sha256")).unwrap();
    let text = std::fs::read_to_string(&lock).unwrap();
    let sha = &l.packages[0].sha256;
    std::fs::write(&lock, text.replace(sha.as_str(), "../../victim")).unwrap();
    let e = prepare(&s, &r, true).err().expect("refused").to_string();
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious", "{e}");
    assert!(
        e.contains(&lock.display().to_string())
            && e.contains("\"../../victim\"")
            && e.contains("64 lower-case hex"),
        "{e}"
    );
}

/// A signed index whose SHA256 is a path is refused naming the index and the package.
#[test]
fn index_and_release_digests_must_be_hex() {
    let s = Setup {
        repo: Repo::new("kilntest"),
        dir: tempfile::tempdir().unwrap(),
        cache: PathBuf::new(),
    };
    let s = Setup {
        cache: s.dir.path().join("cache"),
        ..s
    };
    s.repo.write_keyring(&s.dir.path().join("key.gpg"));
    s.repo
        .publish_with(&[DebSpec::new("app", "1")], "kilntest", |index| {
            let sha = index
                .lines()
                .find_map(|l| l.strip_prefix("SHA256: "))
                .unwrap()
                .to_owned();
            *index = index.replace(&sha, "../../../../victim");
        });
    let r = write_recipe(&s, &s.repo.file_uri(), &["app"]);
    let e = prepare(&s, &r, false).err().expect("refused").to_string();
    assert!(
        e.contains("Packages.gz")
            && e.contains("package \"app\"")
            && e.contains("64 lower-case hex"),
        "{e}"
    );

    // The Release file's own list, signed as a repository would sign it.
    let dists = s.repo.path().join("dists/kilntest");
    let rel = std::fs::read_to_string(dists.join("Release")).unwrap();
    let line = rel
        .lines()
        .find(|l| l.ends_with(" main/binary-amd64/Packages.gz"))
        .unwrap();
    let sha = line.split_whitespace().next().unwrap();
    let evil = rel.replace(sha, "../../cache-escape");
    std::fs::write(dists.join("InRelease"), s.repo.sign(&evil)).unwrap();
    let e = prepare(&s, &r, false).err().expect("refused").to_string();
    assert!(
        e.contains("InRelease") && e.contains("SHA256 line") && e.contains("64 lower-case hex"),
        "{e}"
    );
}

/// A download stops at the size the signed index names: a mirror serving a longer file (or an
/// endless one) is refused once one byte too many arrived.
#[test]
fn downloads_stop_at_the_indexed_size() {
    let s = setup(&[DebSpec::new("app", "1")]);
    let url = common::debrepo::serve_with(s.repo.path().to_owned(), |p| {
        p.starts_with("/pool/")
            .then_some(common::debrepo::Reply::Endless)
    });
    let r = write_recipe(&s, &url, &["app"]);
    let e = prepare(&s, &r, false).err().expect("refused").to_string();
    assert!(
        e.contains("app_1_amd64.deb")
            && e.contains("larger than the")
            && e.contains("bytes the signed index names"),
        "{e}"
    );
    // No temp file is left in the cache either.
    let left: Vec<_> = std::fs::read_dir(s.cache.join("sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.len() != 64)
        .collect();
    assert!(left.is_empty(), "{left:?}");

    // The index understating the size of the real file: the same refusal, before the digest.
    let s = Setup {
        repo: Repo::new("kilntest"),
        dir: tempfile::tempdir().unwrap(),
        cache: PathBuf::new(),
    };
    let s = Setup {
        cache: s.dir.path().join("cache"),
        ..s
    };
    s.repo.write_keyring(&s.dir.path().join("key.gpg"));
    s.repo
        .publish_with(&[DebSpec::new("app", "1")], "kilntest", |index| {
            let size = index
                .lines()
                .find_map(|l| l.strip_prefix("Size: "))
                .unwrap()
                .to_owned();
            *index = index.replace(&format!("Size: {size}"), "Size: 100");
        });
    let r = write_recipe(&s, &s.repo.file_uri(), &["app"]);
    let e = prepare(&s, &r, false).err().expect("refused").to_string();
    assert!(e.contains("larger than the 100 bytes"), "{e}");
}

/// An InRelease is read before anything vouches for it, so it is capped.
#[test]
fn an_oversized_inrelease_is_refused_unread() {
    let s = setup(&[DebSpec::new("app", "1")]);
    let inrel = s.repo.path().join("dists/kilntest/InRelease");
    let f = std::fs::File::create(&inrel).unwrap();
    f.set_len(kiln::packages::fetch::MAX_INRELEASE + 1).unwrap();
    let r = write_recipe(&s, &s.repo.file_uri(), &["app"]);
    let e = prepare(&s, &r, false).err().expect("refused").to_string();
    assert!(
        e.contains("InRelease") && e.contains("is larger than 16777216 bytes"),
        "{e}"
    );
}

/// A redirect may move within the repository's server, never to another scheme, host or port.
#[test]
fn redirects_stay_on_the_repository_server() {
    let s = setup(&[DebSpec::new("app", "1")]);
    // Another server holding the same (validly signed) repository.
    let elsewhere = common::debrepo::serve(s.repo.path().to_owned());
    let away = elsewhere.clone();
    let url = common::debrepo::serve_with(s.repo.path().to_owned(), move |p| {
        use common::debrepo::Reply;
        (p == "/dists/kilntest/InRelease").then(|| Reply::Redirect(format!("{away}{p}")))
    });
    let r = write_recipe(&s, &url, &["app"]);
    let e = prepare(&s, &r, false).err().expect("refused").to_string();
    assert!(
        e.contains(&format!("{url}/dists/kilntest/InRelease"))
            && e.contains(&format!(
                "redirected to {elsewhere}/dists/kilntest/InRelease"
            ))
            && e.contains("leaves the repository's scheme and host"),
        "{e}"
    );

    // Within the same server (a relative Location), redirects are followed: `mirror/` is the
    // repository again, through a symlink.
    std::os::unix::fs::symlink(".", s.repo.path().join("mirror")).unwrap();
    let url = common::debrepo::serve_with(s.repo.path().to_owned(), |p| {
        use common::debrepo::Reply;
        (!p.starts_with("/mirror/")).then(|| Reply::Redirect(format!("/mirror{p}")))
    });
    let r = write_recipe(&s, &url, &["app"]);
    let p = prepare(&s, &r, false).unwrap();
    assert_eq!(p.packages.len(), 1);
}

/// `--allow-host-paths`: the test's `file://` repository lies outside the recipe's directory.
fn host_paths() -> kiln::recipe::Trust {
    kiln::recipe::Trust {
        host_paths: true,
        ..Default::default()
    }
}
