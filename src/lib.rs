//! kiln: build reproducible bootable disk images from a TOML recipe, without root, and publish
//! them as AMIs.
//!
//! The modules follow the pipeline:
//! `recipe → tree → fs/{fat,ext4} → disk → sink/{file,ebs}`; [`pipeline`] strings them together.

pub mod aws;
pub mod cleanup;
pub mod disk;
pub mod fs;
pub mod manifest;
pub mod packages;
pub mod pipeline;
pub mod qemu;
pub mod recipe;
pub mod sink;
pub mod tree;
pub mod util;
