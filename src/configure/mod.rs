//! The effects that packages' maintainer scripts and triggers have on a normal install, applied
//! by kiln itself, natively for any architecture (kiln never runs a maintainer script).
//!
//! Each module is one effect with its own `apply(tree, ...)`:
//! - [`kmod`]: what `depmod` writes for every kernel in the tree (linux-image's postinst);
//! - [`certs`]: what `update-ca-certificates` makes on a fresh install of ca-certificates;
//! - [`ldcache`]: `/etc/ld.so.cache` as libc-bin's trigger (`ldconfig`) writes it.

pub mod certs;
pub mod files;
pub mod kmod;
pub mod ldcache;
