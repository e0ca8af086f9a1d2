//! Filesystem writers. Each takes a [`crate::tree::Tree`] and streams a whole filesystem into a
//! [`crate::sink::BlockSink`].

pub mod ext4;
pub mod fat;
