//! kiln: build reproducible bootable disk images from a TOML recipe, without root, and publish
//! them as AMIs.
//!
//! The modules follow the pipeline:
//! `recipe → tree → fs/{fat,ext4} → disk → sink/{file,ebs}`, with `boot/` adding the loader,
//! kernel and initrd to the tree; [`pipeline`] strings them together.

#[cfg(feature = "aws")]
pub mod aws;
pub mod boot;
pub mod checks;
pub mod cleanup;
pub mod configure;
pub mod disk;
pub mod fs;
#[doc(hidden)]
pub mod fuzzing;
pub mod imds;
pub mod manifest;
pub mod oci;
pub mod outputs;
pub mod packages;
pub mod pipeline;
pub mod qemu;
pub mod recipe;
pub mod sink;
pub mod tree;
pub mod util;
