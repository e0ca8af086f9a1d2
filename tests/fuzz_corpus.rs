//! The fuzz corpora replayed in the ordinary test run (stable, no cargo-fuzz): every kept input
//! of `fuzz/corpus/<target>/` goes through the same function its fuzz target calls
//! (`kiln::fuzzing`), and must return without a panic. Inputs that once crashed a target are kept
//! there, so each fix stays tested. `scripts/fuzz TARGET [SECONDS]` is the real fuzzer.

use std::path::Path;

fn replay(target: &str) {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let dir = fuzz.join("corpus").join(target);
    let mut inputs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "{}: no corpus", dir.display());
    for input in &inputs {
        let data = std::fs::read(input).unwrap();
        let r = std::panic::catch_unwind(|| kiln::fuzzing::run(target, &data, &fuzz));
        assert!(r.is_ok(), "{target}: {} panicked", input.display());
    }
    eprintln!("{target}: {} inputs", inputs.len());
}

#[test]
fn every_target_has_a_corpus() {
    for t in kiln::fuzzing::TARGETS {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("fuzz/fuzz_targets/{t}.rs"));
        assert!(src.exists(), "{}", src.display());
    }
}

#[test]
fn recipe() {
    replay("recipe");
}

#[test]
fn ar() {
    replay("ar");
}

#[test]
fn deb() {
    replay("deb");
}

#[test]
fn tar() {
    replay("tar");
}

#[test]
fn control() {
    replay("control");
}

#[test]
fn inrelease() {
    replay("inrelease");
}

#[test]
fn sysusers() {
    replay("sysusers");
}

#[test]
fn units() {
    replay("units");
}

#[test]
fn postinst() {
    replay("postinst");
}

/// The seeds of `inrelease` verify against `fuzz/keyring.asc`: the target starts from
/// signatures that pass, so it mutates past the signature check.
#[test]
fn inrelease_seeds_verify() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let keys = kiln::fuzzing::inrelease_keys(&fuzz);
    let text = std::fs::read_to_string(fuzz.join("corpus/inrelease/signed-0")).unwrap();
    kiln::packages::release::verify(&text, &keys, "u", Path::new("k"), Some(1_700_000_000))
        .expect("signed-0 verifies");
}
