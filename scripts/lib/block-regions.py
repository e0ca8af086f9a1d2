#!/usr/bin/env python3
"""Where the 512 KiB blocks that changed between two kiln images are (scripts/bench-incremental).

    block-regions.py OLD.raw NEW.raw OLD_TREE NEW_TREE

OLD/NEW.blocks (kiln's block maps) say which 512 KiB blocks a child upload sends; the root
partition (from NEW.manifest.json) is read with dumpe2fs and debugfs (icheck, ncheck), the real
tools, to name what each changed block holds in the new image. OLD_TREE and NEW_TREE are the two
root trees (debugfs rdump) to tell a changed file from an unchanged one. Each changed block is
counted once, under the first of these that it holds:
  changed files     data of a file whose content differs (or is new): unavoidable;
  fs metadata       superblocks, group descriptors, bitmaps, inode tables;
  directories       directory blocks;
  moved files       data of files whose content did not change: the layout's fault;
  freed             nothing in use now (zeros written where the old image had data);
  outside the root  GPT, ESP.
"""
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile

EBS = 512 * 1024
FS = 4096


def block_map(path):
    m = open(path, "rb").read()
    return {int.from_bytes(m[i:i + 8], "big"): m[i + 8:i + 40] for i in range(24, len(m), 40)}


def root_part(image):
    m = json.load(open(image[: -len(".raw")] + ".manifest.json"))
    p = next(p for p in m["partitions"] if p["mount"] == "/")
    return p["first_lba"] * 512, (p["last_lba"] - p["first_lba"] + 1) * 512


def run(args, stdin=None):
    return subprocess.run(args, input=stdin, capture_output=True, text=True).stdout


def metadata_blocks(fs):
    """Blocks of superblocks, descriptors, bitmaps and inode tables, per dumpe2fs."""
    meta = set()
    for line in run(["dumpe2fs", fs]).splitlines():
        for m in re.finditer(r"(?:superblock at|descriptors at|bitmap at|Inode table at) (\d+)(?:-(\d+))?", line):
            a = int(m.group(1))
            b = int(m.group(2) or a)
            meta.update(range(a, b + 1))
    return meta


def debugfs_batch(fs, cmds):
    with tempfile.NamedTemporaryFile("w", suffix=".cmds") as f:
        f.write("\n".join(cmds) + "\n")
        f.flush()
        return run(["debugfs", "-f", f.name, fs])


def owners(fs, blocks):
    """Fs block -> inode number, for the blocks some inode uses (icheck)."""
    out = {}
    blocks = sorted(blocks)
    cmds = ["icheck " + " ".join(map(str, blocks[i:i + 500])) for i in range(0, len(blocks), 500)]
    for line in debugfs_batch(fs, cmds).splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
            out[int(parts[0])] = int(parts[1])
    return out


def paths(fs, inodes):
    out = {}
    inodes = sorted(inodes)
    cmds = ["ncheck " + " ".join(map(str, inodes[i:i + 500])) for i in range(0, len(inodes), 500)]
    for line in debugfs_batch(fs, cmds).splitlines():
        parts = line.split("\t", 1)
        if len(parts) == 2 and parts[0].strip().isdigit():
            out.setdefault(int(parts[0]), parts[1])
    return out


def digest(path):
    try:
        if os.path.islink(path):
            return "link:" + os.readlink(path)
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for b in iter(lambda: f.read(1 << 20), b""):
                h.update(b)
        return h.hexdigest()
    except OSError:
        return None


def main():
    old, new, old_tree, new_tree = sys.argv[1:5]
    a = block_map(old[: -len(".raw")] + ".blocks")
    b = block_map(new[: -len(".raw")] + ".blocks")
    changed = sorted({i for i, d in b.items() if a.get(i) != d} | {i for i in a if i not in b})
    off, size = root_part(new)
    with tempfile.TemporaryDirectory() as tmp:
        fs = os.path.join(tmp, "root.img")
        subprocess.run(["dd", f"if={new}", f"of={fs}", "bs=1M", "iflag=skip_bytes,count_bytes",
                        f"skip={off}", f"count={size}", "conv=sparse", "status=none"], check=True)
        meta = metadata_blocks(fs)
        fs_blocks = {}
        for i in changed:
            lo, hi = max(i * EBS, off), min((i + 1) * EBS, off + size)
            fs_blocks[i] = range((lo - off) // FS, (hi - off + FS - 1) // FS) if lo < hi else range(0)
        own = owners(fs, {x for r in fs_blocks.values() for x in r if x not in meta})
        names = paths(fs, set(own.values()))
    memo = {}

    def kind(ino):
        if ino not in memo:
            p = names.get(ino)
            if ino < 11 and p is None:
                memo[ino] = "fs metadata"  # the journal and other reserved inodes
            elif p is None:
                memo[ino] = "changed files"
            elif os.path.isdir(os.path.join(new_tree, p.lstrip("/"))) and not os.path.islink(
                    os.path.join(new_tree, p.lstrip("/"))):
                memo[ino] = "directories"
            else:
                d_new = digest(os.path.join(new_tree, p.lstrip("/")))
                d_old = digest(os.path.join(old_tree, p.lstrip("/")))
                memo[ino] = "moved files" if d_new is not None and d_new == d_old else "changed files"
        return memo[ino]

    order = ["changed files", "fs metadata", "directories", "moved files", "freed", "outside the root"]
    count = dict.fromkeys(order, 0)
    for i in changed:
        r = fs_blocks[i]
        if len(r) == 0:
            count["outside the root"] += 1
            continue
        found = set()
        for x in r:
            if x in meta:
                found.add("fs metadata")
            elif x in own:
                found.add(kind(own[x]))
        count[next((k for k in order if k in found), "freed")] += 1
    total = len(changed)
    print("  where the changed blocks are: " + ", ".join(
        f"{k} {v} ({100 * v / max(total, 1):.0f}%)" for k, v in count.items() if v))


if __name__ == "__main__":
    main()
