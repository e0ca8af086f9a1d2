//! `kiln push OCI REF`: an OCI image layout (a directory or `.oci.tar`) to a registry.

use kiln::oci::registry::{self, auth::Credentials, PushOptions};
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The OCI image layout: a directory (out/<name>.oci) or an archive (out/<name>.oci.tar).
    pub layout: PathBuf,
    /// Where to push: [HOST[:PORT]/]REPOSITORY[:TAG]; without a tag, the layout's ref name
    /// (the recipe's version, or [container] tag).
    pub reference: String,
    /// The registry user; the password is read from stdin (--password-stdin). Without them,
    /// the Docker config file's credentials for the registry are used, if any.
    #[arg(long, requires = "password_stdin")]
    pub username: Option<String>,
    /// Read the password from standard input (one line).
    #[arg(long, requires = "username")]
    pub password_stdin: bool,
    /// Talk plain HTTP to a registry that is not on loopback (loopback registries always are).
    #[arg(long)]
    pub plain_http: bool,
    /// Blobs larger than this go up in chunks of this size (PATCH requests; a failed chunk is
    /// resumed); 0 sends every blob in one request.
    #[arg(long, default_value = "32MiB", value_parser = parse_size)]
    pub chunk_size: u64,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

fn parse_size(s: &str) -> Result<u64, String> {
    match s {
        "0" => Ok(0),
        _ => kiln::recipe::parse_size(s),
    }
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let credentials = match (&a.username, a.password_stdin) {
        (Some(u), true) => {
            let mut p = String::new();
            std::io::stdin().read_to_string(&mut p)?;
            let p = p.strip_suffix('\n').unwrap_or(&p);
            let p = p.strip_suffix('\r').unwrap_or(p);
            Some(Credentials {
                username: u.clone(),
                password: p.to_string(),
            })
        }
        _ => None,
    };
    let opts = PushOptions {
        credentials,
        plain_http: a.plain_http,
        chunk_size: a.chunk_size,
        ..Default::default()
    };
    let r = registry::push(&a.layout, &a.reference, &opts)?;
    if a.json {
        let v = serde_json::json!({
            "reference": r.reference,
            "digest": r.digest,
            "blobs_uploaded": r.blobs_uploaded,
            "bytes_uploaded": r.bytes_uploaded,
            "blobs_present": r.blobs_present,
            "manifests_put": r.manifests_put,
            "retries": r.retries,
        });
        println!("{v}");
    } else {
        eprintln!(
            "{} blob(s) uploaded ({} bytes), {} already there, {} manifest(s) put, {} retr{}",
            r.blobs_uploaded,
            r.bytes_uploaded,
            r.blobs_present,
            r.manifests_put,
            r.retries,
            if r.retries == 1 { "y" } else { "ies" }
        );
        println!("{}  {}", r.digest, r.reference);
    }
    Ok(ExitCode::SUCCESS)
}
