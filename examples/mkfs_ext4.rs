//! kiln's ext4 writer alone, for `scripts/bench-ext4`: `mkfs_ext4 DIR SIZE_BYTES IMAGE`.
//! Imports DIR as a `[[tree]]` entry would, then writes an ext4 filesystem of SIZE_BYTES.

use kiln::fs::ext4::{self, Ext4Options};
use kiln::recipe::{Arch, Entry, EntryKind, Image, Pos, Recipe};
use kiln::sink::FileSink;
use kiln::tree::{build_tree, ContentStore, Time};
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        return Err("usage: mkfs_ext4 DIR SIZE_BYTES IMAGE".into());
    }
    let size: u64 = args[2].parse()?;
    let recipe = Recipe {
        path: PathBuf::from("bench.toml"),
        sha256: String::new(),
        image: Image {
            name: "bench".into(),
            version: "1".into(),
            arch: Arch::X86_64,
            size,
            source_date_epoch: 1_700_000_000,
            seed: "bench".into(),
        },
        partitions: Vec::new(),
        entries: vec![Entry {
            pos: Pos::default(),
            kind: EntryKind::Tree {
                source: PathBuf::from(&args[1]),
                dest: "/".into(),
                owner: None,
                group: None,
            },
        }],
        repositories: Vec::new(),
        packages: None,
        users: Vec::new(),
        groups: Vec::new(),
        ami: None,
        boot: None,
        output: Default::default(),
        container: None,
        services: None,
        tests: vec![],
    };
    let store = ContentStore::new()?;
    let built = build_tree(&recipe, &store)?;
    let opts = Ext4Options {
        size,
        uuid: kiln::util::derive_uuid("bench", "fs"),
        hash_seed: kiln::util::derive_uuid("bench", "hash"),
        label: "root".into(),
        time: Time::from_secs(1_700_000_000),
        placement: ext4::Placement::default(),
    };
    let mut sink = FileSink::create(&PathBuf::from(&args[3]), size)?;
    ext4::write(&built.tree, &opts, &mut sink)?;
    sink.persist()?;
    Ok(())
}
