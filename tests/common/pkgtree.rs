//! Trees made of real Debian packages, through kiln's own package code and this machine's
//! mirror (`uri = "host"`), for tests that compare kiln's emulated maintainer-script effects
//! with the real tools; and [`export`], which copies part of a tree to the host for them.

use std::path::{Path, PathBuf};

use kiln::tree::{ContentStore, Kind, Tree};

/// The package cache shared by the test binaries (and across runs).
pub fn cache() -> PathBuf {
    std::env::var_os("KILN_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("kiln-cache"))
}

/// The tree of `packages` (and what they depend on) for `arch` (`x86_64`, `aarch64`) from
/// bookworm, as `kiln build` installs it. The store holds the files' contents: keep it alive
/// as long as the tree.
pub fn packages_tree(arch: &str, packages: &[&str]) -> (Tree, ContentStore) {
    let dir = tempfile::tempdir().unwrap();
    let list = packages
        .iter()
        .map(|p| format!("\"{p}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let text = format!(
        r#"
[image]
name = "pkgtree"
version = "1"
arch = "{arch}"
size = "1GiB"
[[partition]]
label = "root"
type = "root"
size = "rest"
filesystem = "ext4"
mount = "/"
[[repository]]
uri = "${{KILN_DEBIAN_MIRROR:-host}}"
suite = "bookworm"
components = ["main"]
[packages]
include = [{list}]
"#
    );
    let path = dir.path().join("pkgtree.toml");
    std::fs::write(&path, text).unwrap();
    let recipe = kiln::recipe::Recipe::load(&path).unwrap();
    let opts = kiln::packages::Options {
        cache: cache(),
        ..Default::default()
    };
    let fetcher = kiln::packages::Fetcher::new(opts.cache.clone());
    let chosen = kiln::packages::resolve_fresh(&recipe, &fetcher, &opts).unwrap();
    let debs = kiln::packages::fetch_packages(&recipe, &chosen, &fetcher, &opts).unwrap();
    let store = ContentStore::new().unwrap();
    let keep = fetcher.cache_dir().join("data-tar");
    let tree =
        kiln::packages::install_packages(&recipe, &chosen, &debs, Some(&keep), &store).unwrap();
    (tree, store)
}

/// Copies the directory at `from` in the tree (symlinks followed on the way there) to `to` on
/// the host: directories, regular files (with their permission bits) and symlinks, without
/// owners or times.
pub fn export(tree: &mut Tree, from: &str, to: &Path) {
    let id =
        kiln::boot::tree_io::lookup(tree, from).unwrap_or_else(|| panic!("{from} not in the tree"));
    std::fs::create_dir_all(to).unwrap();
    let mut stack = vec![(id, to.to_path_buf())];
    while let Some((dir, host)) = stack.pop() {
        let children: Vec<(Vec<u8>, kiln::tree::NodeId)> = tree
            .children(dir)
            .unwrap()
            .iter()
            .map(|(n, &i)| (n.clone(), i))
            .collect();
        for (name, child) in children {
            use std::os::unix::ffi::OsStrExt;
            let p = host.join(std::ffi::OsStr::from_bytes(&name));
            match &tree.node(child).kind {
                Kind::Dir(_) => {
                    std::fs::create_dir_all(&p).unwrap();
                    stack.push((child, p));
                }
                Kind::File(c) => {
                    let mut r = c.open().unwrap();
                    let mut f = std::fs::File::create(&p).unwrap();
                    std::io::copy(&mut r, &mut f).unwrap();
                    use std::os::unix::fs::PermissionsExt;
                    let mode = tree.node(child).meta.mode & 0o7777;
                    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
                }
                Kind::Symlink(t) => {
                    std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(t), &p).unwrap();
                }
                _ => {}
            }
        }
    }
}

/// The bytes of the regular file at `path` in the tree.
pub fn read(tree: &mut Tree, path: &str) -> Option<Vec<u8>> {
    let id = kiln::boot::tree_io::lookup(tree, path)?;
    match &tree.node(id).kind {
        Kind::File(c) => {
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut c.open().unwrap(), &mut v).unwrap();
            Some(v)
        }
        _ => None,
    }
}
