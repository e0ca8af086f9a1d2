//! The root filesystem tree that a recipe describes, before it becomes filesystems.

mod node;

pub use node::{
    seek_data_ranges, Content, ContentReader, Kind, Meta, Node, NodeId, Time, Tree, HOLE_GRANULE,
};
