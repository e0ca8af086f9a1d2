//! Writes an ext4 image of a small tree, for poking at with e2fsck and debugfs by hand.
use kiln::fs::ext4::{write, Ext4Options};
use kiln::sink::FileSink;
use kiln::tree::{Content, Kind, Meta, Node, Time, Tree};

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("usage: ext4_smoke IMG [SIZE_MIB]");
    let mib: u64 = args.next().map_or(64, |s| s.parse().unwrap());
    let t = Time::from_secs(1_700_000_000);
    let mut tree = Tree::new(Meta::new(0o755, 0, 0, t));
    let etc = tree.add(Tree::ROOT, b"etc", Node::dir(Meta::new(0o755, 0, 0, t)));
    tree.add(
        etc,
        b"hostname",
        Node {
            meta: Meta::new(0o644, 0, 0, t),
            kind: Kind::File(Content::bytes("kiln\n")),
        },
    );
    let opts = Ext4Options {
        size: mib << 20,
        uuid: [1; 16],
        hash_seed: [2; 16],
        label: "smoke".into(),
        time: t,
        placement: Default::default(),
    };
    let mut sink = FileSink::create(path.as_ref(), opts.size).unwrap();
    let r = write(&tree, &opts, &mut sink).unwrap();
    sink.persist().unwrap();
    println!("{r:?}");
}
