//! Recipe loading: the full shape, every error class with its position, env expansion, order.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use kiln::recipe::*;
use proptest::prelude::*;

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/recipe")
}

fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let m: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |n| m.get(n).cloned()
}

const HEAD: &str = "[image]\nname = \"t\"\nversion = \"1\"\narch = \"aarch64\"\nsize = \"64MiB\"\n";

/// Parses `HEAD + body` as `/r/k.toml` with an empty environment.
fn parse(body: &str) -> Result<Recipe, RecipeError> {
    let text = format!("{HEAD}{body}");
    Recipe::from_str_with_env(&text, Path::new("/r/k.toml"), &env_of(&[]))
}

/// The error text for `HEAD + body`.
fn err(body: &str) -> String {
    parse(body)
        .expect_err("recipe should be refused")
        .to_string()
}

#[test]
fn full_recipe_parses() {
    let path = testdata().join("full.toml");
    let r = Recipe::load(&path).unwrap();
    let img = &r.image;
    assert_eq!(img.name, "demo-os");
    assert_eq!(img.arch, Arch::X86_64);
    assert_eq!(img.size, 4 * GIB);
    assert_eq!(img.source_date_epoch, 1_600_000_000);
    assert_eq!(
        img.seed, "demo-os",
        "the name alone: versions keep their UUIDs"
    );
    assert_eq!(r.sha256.len(), 64);
    assert_eq!(r.partitions.len(), 2);
    assert_eq!(
        r.partitions[0],
        Partition {
            label: "esp".into(),
            ptype: PartType::Esp,
            size: PartSize::Bytes(512 * MIB),
            filesystem: Filesystem::Vfat,
            mount: Some("/boot/efi".into()),
            options: None,
            placement: Default::default(),
            pos: Pos {
                file: path.clone(),
                line: 9,
                col: 1
            },
        }
    );
    assert_eq!(r.partitions[1].size, PartSize::Rest);
    let kinds: Vec<&EntryKind> = r.entries.iter().map(|e| &e.kind).collect();
    assert_eq!(kinds.len(), 6);
    assert_eq!(
        kinds[0],
        &EntryKind::Directory {
            path: "/etc".into(),
            mode: 0o755,
            owner: 0,
            group: 0
        }
    );
    assert_eq!(
        kinds[1],
        &EntryKind::File {
            path: "/etc/motd".into(),
            source: FileSource::Path(testdata().join("files/motd")),
            mode: 0o644,
            owner: 0,
            group: 0
        }
    );
    assert_eq!(
        kinds[2],
        &EntryKind::Symlink {
            path: "/bin".into(),
            target: "usr/bin".into()
        }
    );
    assert!(matches!(
        kinds[3],
        EntryKind::Tree {
            owner: Some(0),
            group: None,
            ..
        }
    ));
    assert_eq!(
        kinds[4],
        &EntryKind::File {
            path: "/etc/hostname".into(),
            source: FileSource::Inline("demo\n".into()),
            mode: 0o600,
            owner: 1000,
            group: 100
        }
    );
    assert!(matches!(
        kinds[5],
        EntryKind::Directory { mode: 0o1777, .. }
    ));
    assert_eq!(r.entries[0].pos.line, 23);
}

#[test]
fn entries_keep_file_order_across_kinds() {
    let r = parse(
        "[[symlink]]\npath=\"/a\"\ntarget=\"x\"\n[[directory]]\npath=\"/a\"\n\
         [[file]]\npath=\"/a\"\ncontent=\"\"\n[[symlink]]\npath=\"/b\"\ntarget=\"y\"\n",
    )
    .unwrap();
    let order: Vec<&str> = r
        .entries
        .iter()
        .map(|e| match &e.kind {
            EntryKind::Symlink { .. } => "symlink",
            EntryKind::Directory { .. } => "directory",
            EntryKind::File { .. } => "file",
            _ => "other",
        })
        .collect();
    assert_eq!(order, ["symlink", "directory", "file", "symlink"]);
    assert_eq!(
        r.entries.iter().map(|e| e.pos.line).collect::<Vec<_>>(),
        [6, 9, 11, 14]
    );
    // Inline tables in an array are ordered by position too, even before `[image]`.
    let text =
        format!("file = [{{path=\"/z\", content=\"\"}}]\n{HEAD}[[directory]]\npath=\"/d\"\n");
    let r = Recipe::from_str_with_env(&text, Path::new("k.toml"), &env_of(&[])).unwrap();
    assert_eq!(
        r.entries.iter().map(|e| e.pos.line).collect::<Vec<_>>(),
        [1, 7]
    );
}

#[test]
fn syntax_errors_have_positions() {
    let e = err("[[file]\n");
    assert!(e.starts_with("/r/k.toml:6:7: TOML syntax error"), "{e}");
    assert!(e.contains("; expected "), "{e}");
}

#[test]
fn unknown_keys_are_named_with_the_allowed_ones() {
    assert_eq!(
        err("[[file]]\npath = \"/a\"\ncontents = \"x\"\n"),
        "/r/k.toml:8:1: unknown key `contents`; expected one of the keys `path`, `content`, \
         `source`, `mode`, `owner`, `group`"
    );
    let e = err("[imag]\n");
    assert!(
        e.starts_with("/r/k.toml:6:2: unknown key `imag`; expected one of the keys"),
        "{e}"
    );
}

#[test]
fn bad_types_and_missing_keys() {
    let e = err("[[directory]]\npath = \"/a\"\nowner = \"root\"\n");
    assert_eq!(
        e,
        "/r/k.toml:8:9: invalid type: string \"root\"; expected a whole number from 0 to 4294967295"
    );
    let e = err("[[symlink]]\npath = \"/a\"\n");
    assert!(
        e.starts_with("/r/k.toml:6:1: missing key `target`; expected"),
        "{e}"
    );
}

#[test]
fn bad_modes() {
    assert_eq!(
        err("[[file]]\npath = \"/a\"\ncontent = \"\"\nmode = \"0x9\"\n"),
        "/r/k.toml:9:8: mode \"0x9\" is not valid; expected mode must be an octal string like \
         \"0644\""
    );
    assert!(
        err("[[file]]\npath = \"/a\"\ncontent = \"\"\nmode = 644\n").contains("read as decimal")
    );
    assert!(
        err("[[directory]]\npath = \"/a\"\nmode = \"0888\"\n").starts_with("/r/k.toml:8:8: mode")
    );
    assert!(err("[[directory]]\npath = \"/a\"\nmode = \"17777\"\n").contains("octal string"));
}

#[test]
fn bad_image_values() {
    let text = "[image]\nname = \"Bad_Name\"\nversion = \"1\"\narch = \"x86_64\"\nsize = 1048576\n";
    let e = Recipe::from_str_with_env(text, Path::new("k.toml"), &env_of(&[])).unwrap_err();
    assert_eq!(
        e.to_string(),
        "k.toml:2:8: image name \"Bad_Name\" is not allowed; expected lower-case letters, digits \
         and '-' only ([a-z0-9-]+)"
    );
    let text = "[image]\nname = \"a\"\nversion = \"1\"\narch = \"riscv64\"\nsize = \"4GB\"\n";
    let e = Recipe::from_str_with_env(text, Path::new("k.toml"), &env_of(&[])).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("k.toml:4:8: unknown arch \"riscv64\"; expected"),
        "{e}"
    );
    let text = "[image]\nname = \"a\"\nversion = \"1\"\narch = \"x86_64\"\nsize = \"4GB\"\n";
    let e = Recipe::from_str_with_env(text, Path::new("k.toml"), &env_of(&[])).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("k.toml:5:8: size \"4GB\" has an unknown unit \"GB\"; expected"),
        "{e}"
    );
}

const PART: &str = "[[partition]]\nlabel = \"{L}\"\ntype = \"{T}\"\nsize = \"{S}\"\n\
                    filesystem = \"ext4\"\nmount = \"{M}\"\n";

fn part(label: &str, ty: &str, size: &str, mount: &str) -> String {
    PART.replace("{L}", label)
        .replace("{T}", ty)
        .replace("{S}", size)
        .replace("{M}", mount)
}

#[test]
fn ext4_placement_is_chosen_per_partition() {
    use kiln::recipe::Placement;
    let r = parse(&part("a", "linux", "8MiB", "/")).unwrap();
    assert_eq!(r.partitions[0].placement, Placement::Stable);
    let r = parse(&(part("a", "linux", "8MiB", "/") + "placement = \"packed\"\n")).unwrap();
    assert_eq!(r.partitions[0].placement, Placement::Packed);
    let e = err(&(part("a", "linux", "8MiB", "/") + "placement = \"walk\"\n"));
    assert_eq!(
        e,
        "/r/k.toml:12:13: placement \"walk\" is not usable here; expected \"stable\" or \
         \"packed\", on an ext4 partition"
    );
    let fat = part("a", "esp", "40MiB", "/boot/efi").replace("ext4", "vfat");
    let e = err(&(fat + "placement = \"packed\"\n"));
    assert!(
        e.starts_with("/r/k.toml:12:13: placement \"packed\" is not usable"),
        "{e}"
    );
}

#[test]
fn partition_errors() {
    let guid = part("a", "0FC63DAF-8483-4772-8E79-3D69D8477DE4", "8MiB", "/");
    let r = parse(&guid).unwrap();
    assert_eq!(
        r.partitions[0].ptype,
        PartType::Guid(parse_guid("0fc63daf-8483-4772-8e79-3d69d8477de4").unwrap())
    );
    let e = err(&part(
        "a",
        "0FC63DAF-8483-4772-8E79-3D69D8477DEX",
        "8MiB",
        "/",
    ));
    assert!(
        e.starts_with("/r/k.toml:8:8: partition type \"0FC63DAF"),
        "{e}"
    );

    let e = err(&(part("a", "linux", "rest", "/a") + &part("b", "linux", "rest", "/b")));
    assert!(
        e.starts_with("/r/k.toml:6:1: partition \"a\" and a later one both use size \"rest\""),
        "{e}"
    );
    let e = err(&(part("a", "linux", "rest", "/a") + &part("b", "linux", "1MiB", "/b")));
    assert!(
        e.contains("\"a\" uses size \"rest\" but is not the last partition; expected"),
        "{e}"
    );
    let e = err(&(part("a", "linux", "1MiB", "/a") + &part("a", "linux", "1MiB", "/b")));
    assert_eq!(
        e,
        "/r/k.toml:12:1: partition label \"a\" is already used at /r/k.toml:6:1; expected unique \
         partition labels"
    );
    let e = err(&(part("a", "linux", "1MiB", "/srv/") + &part("b", "linux", "1MiB", "/srv")));
    assert!(
        e.starts_with("/r/k.toml:12:1: mount \"/srv\" is already used by partition \"a\""),
        "{e}"
    );
    let e = err(&part("a", "linux", "1MiB", "srv"));
    assert!(
        e.starts_with("/r/k.toml:11:9: mount \"srv\" is not absolute; expected"),
        "{e}"
    );
}

#[test]
fn partitions_must_fit() {
    // 64 MiB image: 2 MiB reserved, so 62 MiB of partitions fit and 63 do not.
    parse(&(part("a", "esp", "30MiB", "/efi") + &part("b", "root", "32MiB", "/"))).unwrap();
    let e = err(&(part("a", "esp", "30MiB", "/efi") + &part("b", "root", "33MiB", "/")));
    assert_eq!(
        e,
        "/r/k.toml:12:1: the partitions need 65 MiB (a (30 MiB) + b (33 MiB) + 2 MiB for \
         alignment and GPT), more than the image size 64 MiB; expected image.size of at least \
         65 MiB (at /r/k.toml:5:8), or smaller partitions"
    );
    // A partition that is not a whole MiB is rounded up to the next boundary.
    let e = err(&(part("a", "esp", "30MiB", "/efi") + &part("b", "root", "33554433", "/")));
    assert!(e.contains("need 65 MiB"), "{e}");
    let e = err(&(part("a", "esp", "62MiB", "/efi") + &part("b", "root", "rest", "/")));
    assert!(e.contains("rest: at least 1 MiB"), "{e}");
}

#[test]
fn paths_must_be_absolute_without_dotdot() {
    let e = err("[[file]]\npath = \"etc/x\"\ncontent = \"\"\n");
    assert!(
        e.starts_with("/r/k.toml:7:8: file path \"etc/x\" is not absolute; expected"),
        "{e}"
    );
    let e = err("[[directory]]\npath = \"/a/../b\"\n");
    assert!(
        e.starts_with("/r/k.toml:7:8: directory path \"/a/../b\" contains a \"..\""),
        "{e}"
    );
    let e = err("[[archive]]\nsource = \"/dev/null/x\"\n");
    assert!(e.contains("does not exist"), "{e}");
    let e = err("[[file]]\npath = \"/\"\ncontent = \"\"\n");
    assert!(e.contains("cannot replace the root"), "{e}");
    let e = err("[[file]]\npath = \"/a\"\n");
    assert!(
        e.starts_with("/r/k.toml:6:1: a file has neither content nor source"),
        "{e}"
    );
}

#[test]
fn missing_sources_are_named_at_their_entry() {
    let path = testdata().join("k.toml");
    let text = format!("{HEAD}\n[[file]]\npath = \"/a\"\nsource = \"files/nope\"\n");
    let e = Recipe::from_str_with_env(&text, &path, &env_of(&[])).unwrap_err();
    assert_eq!(e.kind, RecipeErrorKind::MissingSource);
    assert_eq!((e.pos.line, e.pos.col), (7, 1));
    assert!(e.problem.contains("files/nope does not exist"), "{e}");
    let text = format!("{HEAD}[[tree]]\nsource = \"files/motd\"\ndest = \"/\"\n");
    let e = Recipe::from_str_with_env(&text, &path, &env_of(&[])).unwrap_err();
    assert!(e.to_string().contains("source directory"), "{e}");
}

#[test]
fn env_expansion() {
    let text = "[image]\nname = \"${NAME}\"\nversion = \"${VER:-0.1}\"\narch = \"x86_64\"\n\
                size = \"${SIZE}MiB\"\n[[file]]\npath = \"/p\"\ncontent = \"$$ $HOME ${X:-} $${PATH:-/bin}\"\n";
    let env = env_of(&[
        ("NAME", "envname"),
        ("SIZE", "16"),
        ("SOURCE_DATE_EPOCH", "42"),
    ]);
    let trust = Trust {
        env: ["NAME", "VER", "SIZE", "X"].map(String::from).to_vec(),
        ..Default::default()
    };
    let parse = |env: &dyn Fn(&str) -> Option<String>| {
        Recipe::from_str_with(text, Path::new("k.toml"), env, &trust)
    };
    let r = parse(&env).unwrap();
    assert_eq!(r.image.name, "envname");
    assert_eq!(r.image.version, "0.1");
    assert_eq!(r.image.size, 16 * MIB);
    assert_eq!(r.image.source_date_epoch, 42);
    assert_eq!(r.image.seed, "envname");
    match &r.entries[0].kind {
        EntryKind::File {
            source: FileSource::Inline(s),
            ..
        } => assert_eq!(s, "$$ $HOME  ${PATH:-/bin}"),
        other => panic!("{other:?}"),
    }
    let e = parse(&env_of(&[("NAME", "n")])).unwrap_err();
    assert_eq!(
        e.to_string(),
        "k.toml:5:9: environment variable SIZE is not set; expected SIZE to be set, or a \
         fallback like ${SIZE:-value}"
    );
    let r = parse(&env_of(&[("NAME", "a"), ("SIZE", "8")])).unwrap();
    assert_eq!(r.image.source_date_epoch, DEFAULT_SOURCE_DATE_EPOCH);
}

/// A recipe is code-like input: by default `${NAME}` reads only KILN_* variables, and a
/// `source` must lie inside the recipe's directory (symlinks followed). Each refusal points at
/// the value and names the flag that allows it.
#[test]
fn recipes_reach_the_host_only_as_allowed() {
    let env = env_of(&[
        ("HOME", "/root"),
        ("AWS_SECRET_ACCESS_KEY", "hunter2"),
        ("KILN_DEBIAN_MIRROR", "http://m"),
    ]);
    let body = "[[file]]
path = \"/k\"\ncontent = \"${AWS_SECRET_ACCESS_KEY:-none}\"\n";
    let text = format!("{HEAD}{body}");
    let e = Recipe::from_str_with_env(&text, Path::new("/r/k.toml"), &env).unwrap_err();
    assert_eq!(e.kind, RecipeErrorKind::NotAllowed);
    assert!(
        e.to_string().starts_with(
            "/r/k.toml:8:12: the recipe reads environment variable AWS_SECRET_ACCESS_KEY"
        ) && e.to_string().contains("--allow-env AWS_SECRET_ACCESS_KEY"),
        "{e}"
    );
    let allowed = Trust {
        env: vec!["AWS_SECRET_ACCESS_KEY".into()],
        ..Default::default()
    };
    let r = Recipe::from_str_with(&text, Path::new("/r/k.toml"), &env, &allowed).unwrap();
    assert!(
        matches!(&r.entries[0].kind, EntryKind::File { source: FileSource::Inline(s), .. } if s == "hunter2")
    );
    // KILN_* names are always allowed: the documented mirror switch works unchanged.
    let text = format!(
        "{HEAD}[[file]]\npath = \"/m\"\ncontent = \"${{KILN_DEBIAN_MIRROR:-host}} ${{KILN_UNSET:-x}}\"\n"
    );
    let r = Recipe::from_str_with_env(&text, Path::new("/r/k.toml"), &env).unwrap();
    assert!(
        matches!(&r.entries[0].kind, EntryKind::File { source: FileSource::Inline(s), .. } if s == "http://m x")
    );

    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("recipes");
    std::fs::create_dir_all(dir.join("files")).unwrap();
    std::fs::write(dir.join("files/inside"), "in").unwrap();
    std::fs::write(d.path().join("secret"), "s").unwrap();
    std::os::unix::fs::symlink("../../secret", dir.join("files/link")).unwrap();
    let recipe = dir.join("k.toml");
    let with = |source: &str, trust: &Trust| {
        let text = format!("{HEAD}[[file]]\npath = \"/f\"\nsource = \"{source}\"\n");
        Recipe::from_str_with(&text, &recipe, &env_of(&[]), trust)
    };
    assert!(with("files/inside", &Trust::default()).is_ok());
    let inside_abs = dir.join("files/inside");
    assert!(with(inside_abs.to_str().unwrap(), &Trust::default()).is_ok());
    for outside in ["../secret", "files/link", "/etc/hostname"] {
        let e = with(outside, &Trust::default()).unwrap_err();
        assert_eq!(e.kind, RecipeErrorKind::NotAllowed, "{e}");
        assert_eq!((e.pos.line, e.pos.col), (8, 10), "{e}");
        assert!(
            e.problem.contains("is outside the recipe's directory")
                && e.expected.contains("--allow-host-paths"),
            "{e}"
        );
        let all = Trust {
            host_paths: true,
            ..Default::default()
        };
        assert!(with(outside, &all).is_ok(), "{outside}");
    }
    // [[tree]] and [[archive]] sources too.
    let text = format!("{HEAD}[[tree]]\nsource = \"..\"\ndest = \"/\"\n");
    let e = Recipe::from_str_with(&text, &recipe, &env_of(&[]), &Trust::default()).unwrap_err();
    assert_eq!(e.kind, RecipeErrorKind::NotAllowed, "{e}");
    let text = format!("{HEAD}[[archive]]\nsource = \"../secret\"\n");
    let e = Recipe::from_str_with(&text, &recipe, &env_of(&[]), &Trust::default()).unwrap_err();
    assert_eq!(e.kind, RecipeErrorKind::NotAllowed, "{e}");
}

/// `[[repository]]` reads host files too: a `keyring` and a `file://` archive outside the
/// recipe's directory are refused at their `file:line:col`, naming `--allow-host-paths`, and
/// accepted with it; inside the directory, and the system's keyrings, need no flag.
#[test]
fn repository_keyrings_and_file_uris_are_host_paths() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("recipes");
    std::fs::create_dir_all(dir.join("repo")).unwrap();
    std::fs::create_dir_all(d.path().join("repo")).unwrap();
    std::fs::write(dir.join("key.gpg"), "k").unwrap();
    std::fs::write(d.path().join("outside.gpg"), "k").unwrap();
    let recipe = dir.join("k.toml");
    let repo = |uri: &str, keyring: &str| {
        format!("{HEAD}[[repository]]\nuri = \"{uri}\"\nsuite = \"s\"\nkeyring = \"{keyring}\"\n")
    };
    let load =
        |text: &str, trust: &Trust| Recipe::from_str_with(text, &recipe, &env_of(&[]), trust);
    let all = Trust {
        host_paths: true,
        ..Default::default()
    };
    let inside = format!("file://{}", dir.join("repo").display());
    let outside = format!("file://{}", d.path().join("repo").display());
    for ok in [
        repo(&inside, "key.gpg"),
        repo("host", "key.gpg"),
        repo("http://127.0.0.1:1/d", "key.gpg"),
        repo("host", "/usr/share/keyrings/debian-archive-keyring.gpg"),
    ] {
        load(&ok, &Trust::default()).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    for (text, col, what) in [
        (repo(&outside, "key.gpg"), 7, "repository file://"),
        (repo("host", "../outside.gpg"), 11, "keyring "),
    ] {
        let e = load(&text, &Trust::default()).unwrap_err();
        assert_eq!(e.kind, RecipeErrorKind::NotAllowed, "{e}");
        let line = if what == "keyring " { 9 } else { 7 };
        assert_eq!((e.pos.line, e.pos.col), (line, col), "{e}");
        assert!(
            e.to_string()
                .starts_with(&format!("{}:{line}:{col}: {what}", recipe.display()))
                && e.problem.contains("outside the recipe's directory")
                && e.expected.contains("--allow-host-paths"),
            "{e}"
        );
        load(&text, &all).unwrap_or_else(|e| panic!("{text}: {e}"));
    }
}

/// The flags on the command line: `kiln build` refuses, then builds with --allow-env and
/// --allow-host-paths; `kiln lock` takes the same flags.
#[test]
fn cli_flags_allow_env_and_host_paths() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("recipes");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(d.path().join("outside.txt"), "outside\n").unwrap();
    let recipe = dir.join("t.toml");
    std::fs::write(
        &recipe,
        "[image]\nname = \"t\"\nversion = \"1\"\narch = \"x86_64\"\nsize = \"64MiB\"\n\
         [[partition]]\nlabel = \"root\"\ntype = \"root\"\nsize = \"rest\"\nfilesystem = \"ext4\"\nmount = \"/\"\n\
         [[file]]\npath = \"/who\"\ncontent = \"${KILN_TEST_WHO_PROBE}\"\n\
         [[file]]\npath = \"/outside\"\nsource = \"../outside.txt\"\n",
    )
    .unwrap();
    let kiln = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
            .arg("build")
            .arg(&recipe)
            .arg("-o")
            .arg(d.path().join("t.raw"))
            .args(args)
            .env("KILN_TEST_WHO_PROBE", "me")
            .env("TEST_SECRET", "s")
            .output()
            .unwrap()
    };
    let o = kiln(&[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success()
            && err.contains("t.toml:17:10: source")
            && err.contains("--allow-host-paths"),
        "{err}"
    );
    assert!(!d.path().join("t.raw").exists());
    let o = kiln(&["--allow-host-paths"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::write(
        &recipe,
        std::fs::read_to_string(&recipe)
            .unwrap()
            .replace("KILN_TEST_WHO_PROBE", "TEST_SECRET"),
    )
    .unwrap();
    let o = kiln(&["--allow-host-paths"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success()
            && err.contains("t.toml:14:12: the recipe reads environment variable TEST_SECRET")
            && err.contains("--allow-env TEST_SECRET"),
        "{err}"
    );
    let o = kiln(&["--allow-host-paths", "--allow-env", "TEST_SECRET"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("lock")
        .arg(&recipe)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("TEST_SECRET"), "{err}");
}

#[test]
fn load_reports_unreadable_and_non_utf8_files() {
    let e = Recipe::load(Path::new("/nonexistent/kiln.toml")).unwrap_err();
    assert!(e
        .to_string()
        .starts_with("/nonexistent/kiln.toml:1:1: cannot read the recipe"));
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.toml");
    std::fs::write(&p, b"[image]\nname = \"\xff\"\n").unwrap();
    let e = Recipe::load(&p).unwrap_err();
    assert_eq!((e.pos.line, e.pos.col, e.kind), (2, 9, RecipeErrorKind::Io));
}

fn valid_text() -> String {
    std::fs::read_to_string(testdata().join("full.toml")).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_text_never_panics(s in "\\PC*") {
        let _ = Recipe::from_str_with_env(&s, Path::new("k.toml"), &env_of(&[]));
    }

    #[test]
    fn random_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..400)) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.toml");
        std::fs::write(&p, &b).unwrap();
        let _ = Recipe::load(&p);
    }

    #[test]
    fn mutated_recipes_never_panic(
        edits in proptest::collection::vec(
            (any::<prop::sample::Index>(), 0u8..4, "[\\PC]{0,6}"),
            1..6,
        )
    ) {
        let mut t = valid_text();
        for (at, op, s) in edits {
            let i = floor_boundary(&t, at.index(t.len() + 1));
            match op {
                0 => t.insert_str(i, &s),
                1 => {
                    let j = floor_boundary(&t, (i + s.len()).min(t.len()));
                    t.replace_range(i..j, "");
                }
                2 => t.insert_str(i, "${"),
                _ => {
                    let j = floor_boundary(&t, (i + 1).min(t.len()));
                    t.replace_range(i..j.max(i), &s);
                }
            }
        }
        let _ = Recipe::from_str_with_env(&t, &testdata().join("m.toml"), &env_of(&[("A", "b")]));
    }
}

/// The largest char boundary of `t` at or before `i`.
fn floor_boundary(t: &str, mut i: usize) -> usize {
    while !t.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// `[ami.tags]` may not set kiln's own tags (kiln recognises its images by them) nor AWS's
/// reserved ones; the error points at the key.
#[test]
fn ami_tags_stay_out_of_kiln_and_aws_namespaces() {
    let ami = |tags: &str| {
        format!("[ami]\nname = \"{{name}}-{{version}}\"\n[ami.tags]\nteam = \"x\"\n{tags}\n")
    };
    assert!(parse(&ami("owner = \"me\"")).is_ok());
    let e = err(&ami("\"kiln:image-sha256\" = \"0000\""));
    assert!(
        e.starts_with("/r/k.toml:10:2: tag \"kiln:image-sha256\" is in kiln's own namespace"),
        "{e}"
    );
    let e = err(&ami("\"KILN:name\" = \"web\""));
    assert!(
        e.starts_with("/r/k.toml:10:2:") && e.contains("kiln's own namespace"),
        "{e}"
    );
    let e = err(&ami("\"aws:cloudformation:stack-name\" = \"s\""));
    assert!(e.contains("aws:* namespace, which AWS reserves"), "{e}");
    let e = err(&ami(&format!("long = \"{}\"", "v".repeat(257))));
    assert!(
        e.starts_with("/r/k.toml:10:1:") && e.contains("longer than 256"),
        "{e}"
    );
}
