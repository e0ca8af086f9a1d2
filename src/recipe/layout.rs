//! Partition checks that need the whole list: "rest", unique labels and mounts, and fit.

use toml::Spanned;

use super::error::{RecipeError, RecipeErrorKind as K};
use super::parse::Ctx;
use super::raw::RawImage;
use super::size::{round_up, show_size, MIB};
use super::{Image, PartSize, Partition};

/// Partitions start on 1 MiB boundaries; the first MiB holds the protective MBR and primary GPT,
/// and a trailing MiB is reserved for the backup GPT.
const GPT_RESERVED: u64 = 2 * MIB;

pub(super) fn check(
    image: &Image,
    raw_image: &Spanned<RawImage>,
    parts: &[Partition],
    ctx: &Ctx,
) -> Result<(), RecipeError> {
    let perr = |p: &Partition, what: String, exp: &str| {
        RecipeError::new(p.pos.clone(), K::Layout, what, exp)
    };
    for (i, p) in parts.iter().enumerate() {
        if p.size == PartSize::Rest && i + 1 != parts.len() {
            let what = if parts[i + 1..].iter().any(|q| q.size == PartSize::Rest) {
                format!(
                    "partition {:?} and a later one both use size \"rest\"",
                    p.label
                )
            } else {
                format!(
                    "partition {:?} uses size \"rest\" but is not the last partition",
                    p.label
                )
            };
            return Err(perr(p, what, "size = \"rest\" on the last partition only"));
        }
        for q in &parts[..i] {
            if q.label == p.label {
                return Err(perr(
                    p,
                    format!("partition label {:?} is already used at {}", p.label, q.pos),
                    "unique partition labels",
                ));
            }
            if let (Some(a), Some(b)) = (&q.mount, &p.mount) {
                if normalize(a) == normalize(b) {
                    return Err(perr(
                        p,
                        format!(
                            "mount {b:?} is already used by partition {:?} at {}",
                            q.label, q.pos
                        ),
                        "each mount point on one partition only",
                    ));
                }
            }
        }
    }
    let mut need = GPT_RESERVED;
    let mut shown = Vec::new();
    for p in parts {
        let n = match p.size {
            PartSize::Bytes(n) => n,
            PartSize::Rest => MIB, // at least one aligned MiB must be left for it
        };
        shown.push(format!(
            "{} ({})",
            p.label,
            if p.size == PartSize::Rest {
                "rest: at least 1 MiB".into()
            } else {
                show_size(n)
            }
        ));
        need = round_up(n, MIB)
            .and_then(|n| need.checked_add(n))
            .unwrap_or(u64::MAX);
        if need > image.size {
            let what = format!(
                "the partitions need {} ({} + 2 MiB for alignment and GPT), \
                 more than the image size {}",
                show_size(need),
                shown.join(" + "),
                show_size(image.size)
            );
            let at = ctx.pos(raw_image.get_ref().size.span().start);
            let exp = format!(
                "image.size of at least {} (at {at}), or smaller partitions",
                show_size(need)
            );
            return Err(RecipeError::new(p.pos.clone(), K::Layout, what, exp));
        }
    }
    Ok(())
}

fn normalize(p: &str) -> String {
    let parts: Vec<&str> = p
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    format!("/{}", parts.join("/"))
}
