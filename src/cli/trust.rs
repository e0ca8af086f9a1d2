//! `--allow-host-paths` and `--allow-env NAME`, on every subcommand that loads a recipe.

use kiln::recipe::Trust;

#[derive(Debug, Clone, Default, clap::Args)]
pub struct TrustArgs {
    /// Let the recipe's `source`s name files outside the recipe's directory (a recipe is
    /// code-like input: by default it may not copy the host's files into an image).
    #[arg(long)]
    pub allow_host_paths: bool,
    /// Let the recipe's `${NAME}` read environment variable NAME (repeatable; `*` allows every
    /// variable). KILN_* variables, such as KILN_DEBIAN_MIRROR, are always allowed.
    #[arg(long = "allow-env", value_name = "NAME")]
    pub allow_env: Vec<String>,
}

impl TrustArgs {
    pub fn trust(&self) -> Trust {
        Trust {
            host_paths: self.allow_host_paths,
            env: self.allow_env.clone(),
        }
    }
}
