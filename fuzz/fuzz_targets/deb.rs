//! A whole `.deb`: the ar container, debian-binary, control.tar (its files kept for dpkg's
//! database) and data.tar (unpacked into a tree through the content store), then the database.
#![no_main]
use kiln::tree::{ContentStore, Meta, Time, Tree};
use libfuzzer_sys::fuzz_target;

thread_local! {
    static STORE: ContentStore = ContentStore::new().expect("content store");
}

fuzz_target!(|data: &[u8]| {
    let sde = Time::from_secs(1_700_000_000);
    let mut tree = Tree::new(Meta::new(0o755, 0, 0, sde));
    STORE.with(|store| {
        if let Ok(u) = kiln::packages::deb::unpack_from(data, "fuzz", None, &mut tree, sde, store) {
            let _ = kiln::packages::dpkg::write_database(&mut tree, &[&u], sde);
        }
    });
});
