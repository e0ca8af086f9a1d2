//! The root filesystem tree that a recipe describes, before it becomes filesystems.
//!
//! [`build_tree`] applies the recipe's entries in order; [`path`] resolves paths inside the
//! tree with chroot semantics; [`host`] and `archive` import host directories and tar archives.

mod archive;
mod build;
mod error;
pub mod host;
mod node;
pub mod path;
mod store;

pub use archive::{unpack_tar, MemberFailure, MAX_MEMBER_SIZE};
pub use build::{
    build_tree, build_tree_on, build_tree_on_deferred, Built, InputDigest, PendingDigests,
};
pub use error::{ArchiveError, TreeError};
pub use node::{
    seek_data_ranges, Content, ContentReader, Kind, Meta, Node, NodeId, Stored, Time, Tree,
    HOLE_GRANULE,
};
pub use store::ContentStore;
