//! The bodies of the fuzz targets, one function per parser that reads untrusted bytes.
//!
//! `fuzz/fuzz_targets/*` (cargo-fuzz, nightly) call these, and so does `tests/fuzz_corpus.rs`,
//! which replays the kept corpora (`fuzz/corpus/<target>/*`) in the ordinary stable test run:
//! every input that once crashed or found new code keeps being checked without a fuzzing
//! toolchain. Each function only has to return; an error is a fine answer, a panic, an abort or
//! an allocation the input's claims drive is a bug. Nothing here touches the network, the
//! process environment or any file outside a temp directory.

use crate::configure::accounts::Accounts;
use crate::configure::host::World;
use crate::configure::units::Scope;
use crate::configure::{fsops, script, sysusers, units};
use crate::packages::{deb, dpkg, index, release, resolve, sources};
use crate::recipe::{Recipe, Trust};
use crate::tree::{ContentStore, Meta, Time, Tree};
use pgp::composed::SignedPublicKey;
use std::path::Path;

/// Every target, by the name of its `fuzz/fuzz_targets/<name>.rs` and `fuzz/corpus/<name>/`.
pub const TARGETS: [&str; 9] = [
    "recipe",
    "ar",
    "deb",
    "tar",
    "control",
    "inrelease",
    "sysusers",
    "units",
    "postinst",
];

const SDE: i64 = 1_700_000_000;

/// Runs `f` with this thread's content store. A fuzzer runs millions of inputs: one store per
/// input would register a temp directory each time; one for ever would grow its pack without
/// end. So a store is replaced once its pack passes 64 MiB.
fn with_store<R>(f: impl FnOnce(&ContentStore) -> R) -> R {
    thread_local! {
        static STORE: std::cell::RefCell<Option<ContentStore>> = const { std::cell::RefCell::new(None) };
    }
    STORE.with(|cell| {
        let mut slot = cell.borrow_mut();
        let full = slot.as_ref().is_some_and(|s| {
            std::fs::metadata(s.path().join("pack")).is_ok_and(|m| m.len() > 64 << 20)
        });
        if full || slot.is_none() {
            *slot = Some(ContentStore::new().expect("a content store in the temp directory"));
        }
        f(slot.as_ref().expect("set above"))
    })
}

fn empty_tree() -> Tree {
    Tree::new(Meta::new(0o755, 0, 0, Time::from_secs(SDE)))
}

/// The recipe loader: TOML, spans, `${NAME}` expansion, every table's validation, with the
/// default trust and with everything allowed.
pub fn recipe(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let env = |n: &str| match n {
        "KILN_X" | "X" => Some("x".to_string()),
        "SOURCE_DATE_EPOCH" => Some(SDE.to_string()),
        _ => None,
    };
    // A directory that does not exist: sources are looked up, never found, never read.
    let path = Path::new("/nonexistent-kiln-fuzz/r.toml");
    let _ = Recipe::from_str_with_env(text, path, &env);
    let _ = Recipe::from_str_with(text, path, &env, &Trust::all());
}

/// The `ar` container alone, as `.deb` files use it (`packages::ar`): every member's header and
/// length, each member read whole or left for the reader to skip.
pub fn ar(data: &[u8]) {
    let mut a = crate::packages::ar::Archive::new(data);
    let mut read = data.len() % 2 == 0;
    while let Some(entry) = a.next_entry() {
        let Ok(mut e) = entry else {
            return;
        };
        let _ = (e.name().len(), e.size());
        if read && std::io::copy(&mut e, &mut std::io::sink()).is_err() {
            return;
        }
        read = !read;
    }
}

/// A whole `.deb`: the ar container, debian-binary, control.tar (its files kept for dpkg's
/// database) and data.tar (unpacked into a tree through the content store), then the database.
pub fn deb(data: &[u8]) {
    let sde = Time::from_secs(SDE);
    let mut tree = empty_tree();
    with_store(|store| {
        if let Ok(u) = deb::unpack_from(data, "fuzz", None, &mut tree, sde, store) {
            let _ = dpkg::write_database(&mut tree, &[&u], sde);
        }
    });
}

/// A tar stream unpacked into a tree, as `data.tar` and `[[archive]]` are: hostile paths,
/// links, sizes and headers.
pub fn tar(data: &[u8]) {
    let mut tree = empty_tree();
    let mut r = data;
    with_store(|store| {
        let _ = crate::tree::unpack_tar(&mut tree, Time::from_secs(SDE), store, &mut r);
    });
}

/// deb822 text: `Packages` stanzas (parsed, then resolved), a control file as dpkg's database
/// writes it, and APT's `.sources` and one-line `sources.list`.
pub fn control(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = index::paragraphs(text);
    if let Ok(pkgs) = index::parse_packages(text, 0) {
        let names: Vec<String> = pkgs.iter().take(4).map(|p| p.name.clone()).collect();
        let u = resolve::Universe::new(pkgs, "amd64");
        let _ = u.resolve(&resolve::Request {
            include: names,
            exclude: vec![],
            required: true,
        });
    }
    let sde = Time::from_secs(SDE);
    let mut tree = empty_tree();
    let u = deb::Unpacked {
        control: text.to_owned(),
        info: vec![("conffiles".into(), data.to_vec())],
        files: vec!["/.".into()],
    };
    let _ = dpkg::write_database(&mut tree, &[&u], sde);
    let _ = sources::parse_deb822(text, Path::new("f.sources"));
    let _ = sources::parse_one_line(text, Path::new("f.list"));
}

/// `InRelease`: the cleartext signature framework and OpenPGP packets (rPGP), kiln's key
/// checks against `keys`, then the Release fields and SHA256 list (signed or not).
pub fn inrelease(data: &[u8], keys: &[SignedPublicKey]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = release::verify(text, keys, "u", Path::new("k"), Some(SDE));
    if let Ok(r) = release::parse(text) {
        let _ = release::check(&r, "bookworm", Some(SDE), "u");
    }
}

/// The `inrelease` target's keyring: `fuzz/keyring.asc` (the key that signed its seeds).
pub fn inrelease_keys(fuzz_dir: &Path) -> Vec<SignedPublicKey> {
    release::load_keyring(&fuzz_dir.join("keyring.asc")).expect("fuzz/keyring.asc")
}

/// base-passwd's accounts, as a fresh image has them before any package's scripts run.
fn base_accounts() -> Accounts {
    Accounts::from_masters(
        "root:x:0:0:root:/root:/bin/bash\ndaemon:*:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
         nobody:*:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
        "root:*:0:\ndaemon:*:1:\nadm:*:4:\nnogroup:*:65534:\n",
        SDE / 86_400,
    )
}

/// A sysusers.d file: each line read, then the whole file applied as systemd-sysusers would
/// (ids allocated, members added, ranges honoured) to base-passwd's accounts, then written.
pub fn sysusers(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = sysusers::parse(text);
    let mut tree = empty_tree();
    let mut a = base_accounts();
    let _ = sysusers::apply(&mut a, &tree, &[("fuzz.conf".into(), text.to_owned())]);
    let _ = a.write(&mut tree, Time::from_secs(SDE));
}

/// A systemd unit file: its `[Install]` section read, then enabled, checked and disabled as
/// `systemctl --root enable|is-enabled|disable` would, as a plain unit and as a template (with
/// and without an instance); the same text read as a `.preset` file.
pub fn units(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let sde = Time::from_secs(SDE);
    let _ = units::parse(text);
    let _ = units::parse_preset(text);
    let mut tree = empty_tree();
    for path in [
        "/lib/systemd/system/f.service",
        "/lib/systemd/system/t@.service",
    ] {
        if fsops::write_file(&mut tree, path, data.to_vec(), 0o644, 0, 0, sde).is_err() {
            return;
        }
    }
    let names = ["f.service", "t@.service", "t@i.service"];
    let _ = units::enable(&mut tree, Scope::System, &names, sde);
    for n in names {
        let _ = units::is_enabled(&tree, Scope::System, n);
    }
    let _ = units::disable(&mut tree, Scope::System, &names);
}

/// A maintainer script: read by kiln's shell reader, then evaluated as `postinst configure`
/// on a fresh install against a world of base-passwd's accounts and an empty tree, where every
/// command it runs reaches kiln's own handlers (adduser, deb-systemd-helper, ucf, ...).
pub fn postinst(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(parsed) = script::parse(text) else {
        return;
    };
    let mut tree = empty_tree();
    let mut world = World::new(&mut tree, Time::from_secs(SDE), "amd64", base_accounts());
    world.package = "fuzz".into();
    world.pkg_key = "fuzz".into();
    world.script = "postinst".into();
    let path = "/var/lib/dpkg/info/fuzz.postinst";
    let mut sh = script::Shell::new(&mut world, path, &["configure", ""], &[("DPKG_ROOT", "")]);
    sh.set_errexit(true);
    sh.run(&parsed);
    drop(sh);
    world.end_script();
}

/// Runs target `name` on `data`; `fuzz_dir` is where `keyring.asc` is.
pub fn run(name: &str, data: &[u8], fuzz_dir: &Path) {
    match name {
        "recipe" => recipe(data),
        "ar" => ar(data),
        "deb" => deb(data),
        "tar" => tar(data),
        "control" => control(data),
        "sysusers" => sysusers(data),
        "units" => units(data),
        "postinst" => postinst(data),
        "inrelease" => {
            static KEYS: std::sync::OnceLock<Vec<SignedPublicKey>> = std::sync::OnceLock::new();
            inrelease(data, KEYS.get_or_init(|| inrelease_keys(fuzz_dir)))
        }
        other => panic!("no fuzz target {other:?}"),
    }
}
