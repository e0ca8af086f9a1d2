//! The disk: a GPT around the partitions' filesystems, streamed in order into one sink.

pub mod assemble;
pub mod gpt;
pub mod layout;
pub mod sparse;

pub use layout::{plan, DiskPlan, LayoutError, PartitionPlan};
