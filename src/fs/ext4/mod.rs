//! kiln's own ext4 writer (in progress).
