//! Recipe errors: every one points at a place in the recipe file.

use super::Pos;

/// What class of mistake a [`RecipeError`] reports, for callers that branch on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecipeErrorKind {
    /// The recipe file could not be read, or is not UTF-8.
    Io,
    /// Not valid TOML.
    Syntax,
    /// Valid TOML, but an unknown key, a missing key or a value of the wrong type.
    Schema,
    /// A value of the right type that kiln does not accept (a bad mode, size, name, path, ...).
    Value,
    /// A `${NAME}` that cannot be expanded.
    Env,
    /// Partitions that do not fit or contradict each other.
    Layout,
    /// A `source` that does not exist on the host.
    MissingSource,
    /// A `source` outside the recipe's directory, or a `${NAME}` the [`super::Trust`] does not
    /// allow.
    NotAllowed,
}

/// One mistake in a recipe, shown as `FILE:LINE:COL: <what is wrong>; expected <what>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{pos}: {problem}; expected {expected}")]
pub struct RecipeError {
    pub pos: Pos,
    pub kind: RecipeErrorKind,
    /// What is wrong, without the position.
    pub problem: String,
    /// What kiln expected instead.
    pub expected: String,
}

impl RecipeError {
    pub(crate) fn new(
        pos: Pos,
        kind: RecipeErrorKind,
        problem: impl Into<String>,
        expected: impl Into<String>,
    ) -> Self {
        RecipeError {
            pos,
            kind,
            problem: problem.into(),
            expected: expected.into(),
        }
    }
}
