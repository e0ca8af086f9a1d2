//! deb822 text: `Packages` stanzas (parsed into packages, then resolved), a control file as
//! dpkg's database writes it, and APT's `.sources` and one-line `sources.list`.
#![no_main]
use kiln::packages::{deb::Unpacked, dpkg, index, resolve};
use kiln::tree::{Meta, Time, Tree};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
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
    let sde = Time::from_secs(1_700_000_000);
    let mut tree = Tree::new(Meta::new(0o755, 0, 0, sde));
    let u = Unpacked {
        control: text.to_owned(),
        info: vec![("conffiles".into(), data.to_vec())],
        files: vec!["/.".into()],
    };
    let _ = dpkg::write_database(&mut tree, &[&u], sde);
    let _ = kiln::packages::sources::parse_deb822(text, std::path::Path::new("f.sources"));
    let _ = kiln::packages::sources::parse_one_line(text, std::path::Path::new("f.list"));
});
