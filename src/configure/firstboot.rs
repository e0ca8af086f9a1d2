//! First boot.
