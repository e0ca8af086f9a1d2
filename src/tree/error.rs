//! Errors while building the tree. Each carries the recipe position of the entry and the path.

use std::io;
use std::path::PathBuf;

use crate::recipe::Pos;

#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    /// The entry's path cannot be placed in the tree.
    #[error("{pos}: {path}: {problem}; {fix}")]
    Path {
        pos: Pos,
        path: String,
        problem: String,
        fix: String,
    },
    /// A host file or directory could not be read.
    #[error("{pos}: cannot read {} (for {path}): {source}; make it readable", host.display())]
    Io {
        pos: Pos,
        path: String,
        host: PathBuf,
        source: io::Error,
    },
    /// An archive, or one of its members, is refused.
    #[error(transparent)]
    Archive(Box<ArchiveError>),
}

/// Details of [`TreeError::Archive`] (boxed: they are large and rare).
#[derive(Debug)]
pub struct ArchiveError {
    pub pos: Pos,
    /// The entry's `dest`.
    pub path: String,
    pub archive: PathBuf,
    /// The member's path as written in the archive (empty for the archive as a whole).
    pub member: String,
    pub problem: String,
    pub fix: String,
}

impl TreeError {
    /// The recipe position of the entry that failed.
    pub fn pos(&self) -> &Pos {
        match self {
            TreeError::Path { pos, .. } | TreeError::Io { pos, .. } => pos,
            TreeError::Archive(a) => &a.pos,
        }
    }
}

impl std::fmt::Display for ArchiveError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: archive {}", self.pos, self.archive.display())?;
        if !self.member.is_empty() {
            write!(f, ", entry {:?}", self.member)?;
        }
        write!(f, ": {}; {}", self.problem, self.fix)
    }
}

impl std::error::Error for ArchiveError {}
