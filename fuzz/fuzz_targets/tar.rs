//! A tar stream unpacked into a tree, as `data.tar` and `[[archive]]` are: hostile paths, links,
//! sizes and headers.
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
        let mut r = data;
        let _ = kiln::tree::unpack_tar(&mut tree, sde, store, &mut r);
    });
});
