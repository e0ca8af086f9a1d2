//! Errors of the configure step: each names the file or package to look at.

#[derive(Debug, thiserror::Error)]
pub enum ConfigureError {
    #[error("cannot write {path} into the image's tree: {problem}")]
    Tree { path: String, problem: String },
    #[error("{pos}: {problem}; expected {expected}")]
    Recipe {
        pos: crate::recipe::Pos,
        problem: String,
        expected: String,
    },
    #[error("{count} maintainer-script command(s) were not applied and --strict-scripts is set; the first: {first} (the manifest lists them all under maintainer_scripts)")]
    Strict { count: usize, first: String },
    #[error("{path}: {problem}")]
    Image { path: String, problem: String },
}
