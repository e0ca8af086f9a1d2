//! The GPT and the FAT32 ESP, checked by the real tools: sgdisk -v, sfdisk --json, fsck.fat -n
//! and mtools reading files back.

mod common;

use common::{extract, run, run_ok};
use kiln::disk::assemble::{write_disk, Contents};
use kiln::disk::layout::plan_parts;
use kiln::recipe::{Arch, Filesystem, PartSize, PartType, Partition, Pos};
use kiln::sink::{FileSink, HashSink, Want};
use kiln::tree::{Content, Kind, Meta, Node, Time, Tree};
use std::process::Command;

fn part(label: &str, ptype: PartType, size: PartSize, fs: Filesystem) -> Partition {
    Partition {
        label: label.into(),
        ptype,
        size,
        filesystem: fs,
        mount: None,
        options: None,
        placement: Default::default(),
        pos: Pos::default(),
    }
}

fn esp_tree() -> Tree {
    let m = |mode| Meta::new(mode, 0, 0, Time::from_secs(1_700_000_000));
    let mut t = Tree::new(m(0o755));
    let efi = t.add(Tree::ROOT, b"EFI", Node::dir(m(0o755)));
    let boot = t.add(efi, b"BOOT", Node::dir(m(0o755)));
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    t.add(
        boot,
        b"BOOTX64.EFI",
        Node {
            meta: m(0o644),
            kind: Kind::File(Content::bytes(big)),
        },
    );
    let loader = t.add(Tree::ROOT, b"loader", Node::dir(m(0o755)));
    t.add(
        loader,
        b"loader.conf",
        Node {
            meta: m(0o644),
            kind: Kind::File(Content::bytes("timeout 0\n")),
        },
    );
    t.add(
        Tree::ROOT,
        b"a long file name.txt",
        Node {
            meta: m(0o644),
            kind: Kind::File(Content::bytes("hello")),
        },
    );
    t
}

#[test]
fn gpt_and_esp_pass_the_real_tools() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.raw");
    let parts = [
        part(
            "esp",
            PartType::Esp,
            PartSize::Bytes(64 << 20),
            Filesystem::Vfat,
        ),
        part("root", PartType::Root, PartSize::Rest, Filesystem::None),
    ];
    let plan = plan_parts(100 << 20, Arch::X86_64, "test-seed", &parts).unwrap();
    let mut sink = HashSink::new(
        FileSink::create(&img, plan.size).unwrap(),
        plan.size,
        Want {
            sha256: true,
            blocks: true,
        },
    );
    let contents = [Contents::Fat(esp_tree()), Contents::Empty];
    write_disk(
        &plan,
        &contents,
        "test-seed",
        Time::from_secs(1_700_000_000),
        &mut sink,
    )
    .unwrap();
    let (file, sha) = sink.finish().unwrap();
    file.persist().unwrap();
    assert_eq!(
        sha.sha256,
        Some(common::sha256_file(&img)),
        "streamed hash equals the file's hash"
    );
    assert_eq!(
        sha.blocks,
        Some(kiln::sink::blocks::BlockMapper::of_file(&img).unwrap()),
        "streamed block map equals the file's"
    );

    let out = run_ok(Command::new("sgdisk").arg("-v").arg(&img));
    assert!(out.contains("No problems found"), "sgdisk -v:\n{out}");

    let json = run_ok(Command::new("sfdisk").arg("--json").arg(&img));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let t = &v["partitiontable"];
    assert_eq!(t["label"], "gpt");
    assert_eq!(
        t["id"],
        kiln::util::uuid_string(&plan.disk_guid).to_uppercase()
    );
    let ps = t["partitions"].as_array().unwrap();
    assert_eq!(ps.len(), 2);
    assert_eq!(ps[0]["start"], 2048);
    assert_eq!(ps[0]["size"], (64 << 20) / 512);
    assert_eq!(ps[0]["type"], "C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
    assert_eq!(ps[0]["name"], "esp");
    assert_eq!(ps[1]["type"], "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709");
    assert_eq!(ps[1]["name"], "root");
    assert_eq!(
        ps[1]["uuid"],
        kiln::util::uuid_string(&plan.partitions[1].unique_guid).to_uppercase()
    );
    assert_eq!(ps[1]["start"].as_u64().unwrap() % 2048, 0, "1 MiB aligned");

    let esp = dir.path().join("esp.img");
    extract(
        &img,
        plan.partitions[0].offset(),
        plan.partitions[0].size(),
        &esp,
    );
    let o = run(Command::new("fsck.fat").arg("-n").arg(&esp));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "fsck.fat -n failed:\n{text}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        text.contains("FAT32") || run_ok(Command::new("file").arg(&esp)).contains("FAT (32 bit)")
    );

    // mtools reads each file back straight out of the disk image at the partition's offset.
    let at = format!("{}@@{}", img.display(), plan.partitions[0].offset());
    let got = Command::new("mtype")
        .args(["-i", &at, "::/loader/loader.conf"])
        .output()
        .unwrap();
    assert_eq!(
        got.stdout,
        b"timeout 0\n",
        "{}",
        String::from_utf8_lossy(&got.stderr)
    );
    let got = Command::new("mtype")
        .args(["-i", &at, "::/a long file name.txt"])
        .output()
        .unwrap();
    assert_eq!(got.stdout, b"hello");
    let copy = dir.path().join("boot.efi");
    run_ok(
        Command::new("mcopy")
            .args(["-n", "-i", &at, "::/EFI/BOOT/BOOTX64.EFI"])
            .arg(&copy),
    );
    let want: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    assert_eq!(std::fs::read(&copy).unwrap(), want);
    let listing = run_ok(Command::new("mdir").args(["-i", &at, "::/EFI/BOOT"]));
    assert!(
        listing.contains("2023-11-14"),
        "timestamps come from source_date_epoch:\n{listing}"
    );
}

#[test]
fn same_input_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let parts = [part("esp", PartType::Esp, PartSize::Rest, Filesystem::Vfat)];
    let plan = plan_parts(64 << 20, Arch::Aarch64, "s", &parts).unwrap();
    let mut hashes = Vec::new();
    for i in 0..2 {
        let img = dir.path().join(format!("{i}.raw"));
        let want = Want {
            sha256: true,
            blocks: false,
        };
        let mut sink = HashSink::new(FileSink::create(&img, plan.size).unwrap(), plan.size, want);
        write_disk(
            &plan,
            &[Contents::Fat(esp_tree())],
            "s",
            Time::from_secs(5),
            &mut sink,
        )
        .unwrap();
        let (f, sha) = sink.finish().unwrap();
        f.persist().unwrap();
        hashes.push(sha.sha256);
    }
    assert_eq!(hashes[0], hashes[1]);
}
