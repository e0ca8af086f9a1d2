//! `kiln build RECIPE [-o IMAGE] [--json]`

use indicatif::{ProgressBar, ProgressStyle};
use kiln::pipeline::{self, BuildOptions, Progress};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The recipe (TOML).
    pub recipe: PathBuf,
    /// Where to write the image; default out/<name>.raw.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Print the manifest's path and the image's sha256 as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Install exactly the packages in `<recipe stem>.lock` (made by `kiln lock`); with a warm
    /// cache this needs no network.
    #[arg(long)]
    pub locked: bool,
}

struct Bar(ProgressBar);

impl Progress for Bar {
    fn start(&self, total: u64) {
        self.0.set_length(total);
    }
    fn update(&self, pos: u64) {
        self.0.set_position(pos);
    }
    fn finish(&self) {
        self.0.finish_and_clear();
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let progress: Option<Box<dyn Progress>> = if std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_message("writing disk");
        Some(Box::new(Bar(bar)))
    } else {
        None
    };
    let out = pipeline::build(
        &args.recipe,
        BuildOptions {
            output: args.output,
            progress,
            locked: args.locked,
            packages: Some(kiln::packages::Options {
                progress: std::io::stderr().is_terminal(),
                ..Default::default()
            }),
        },
    )?;
    if args.json {
        let v = serde_json::json!({
            "manifest": out.manifest_path,
            "image": out.image,
            "sha256": out.manifest.image.sha256,
        });
        println!("{v}");
    } else {
        println!("{}  {}", out.manifest.image.sha256, out.image.display());
        println!("manifest: {}", out.manifest_path.display());
    }
    Ok(ExitCode::SUCCESS)
}
