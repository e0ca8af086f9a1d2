//! What names an image on AWS: the kiln tags on its snapshots and AMIs, and when two of them
//! name the same disk.
//!
//! | key | value |
//! |---|---|
//! | `kiln:name` | the recipe's `image.name` |
//! | `kiln:version` | the recipe's `image.version` |
//! | `kiln:image-blocks-sha256` | the blocks digest (hex): the manifest's `image.blocks.sha256` |
//! | `kiln:image-sha256` | SHA-256 (hex) of the whole raw disk, only when it was asked for (`--sha256`) or came with the manifest |
//! | `kiln:kiln-version` | the version of kiln that made it |
//!
//! The blocks digest costs what the disk holds, so it names images. kiln versions before it
//! named them by `kiln:image-sha256` alone: such an image is still kiln's, and is matched by its
//! sha256 when the other side knows it (see [`ImageIdentity::same_disk`]).

pub const TAG_NAME: &str = "kiln:name";
pub const TAG_VERSION: &str = "kiln:version";
pub const TAG_BLOCKS: &str = "kiln:image-blocks-sha256";
pub const TAG_SHA256: &str = "kiln:image-sha256";
pub const TAG_KILN_VERSION: &str = "kiln:kiln-version";

/// What the kiln tags say about an image: its name and version, and its digests.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ImageIdentity {
    pub name: String,
    pub version: String,
    /// The blocks digest (`kiln:image-blocks-sha256`); `None` on what an earlier kiln made, and
    /// for `build --upload` until the last block is written.
    pub blocks: Option<String>,
    /// The whole-disk SHA-256 (`kiln:image-sha256`), when known.
    pub sha256: Option<String>,
}

impl ImageIdentity {
    /// Whether `self` and `other` name the same disk: by the blocks digest when both carry it
    /// (and then their sha256s may not disagree), else by the sha256 when both carry that.
    /// Never by name or version alone.
    pub fn same_disk(&self, other: &ImageIdentity) -> bool {
        let sha = match (&self.sha256, &other.sha256) {
            (Some(a), Some(b)) => Some(a == b),
            _ => None,
        };
        match (&self.blocks, &other.blocks) {
            (Some(a), Some(b)) => a == b && sha != Some(false),
            _ => sha == Some(true),
        }
    }

    /// From an image's or a snapshot's tags: kiln's only if it carries `kiln:name`,
    /// `kiln:version` and at least one of the digests.
    pub fn from_tags(tags: &[(String, String)]) -> Option<ImageIdentity> {
        let tag = |key: &str| {
            tags.iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.to_string())
        };
        let id = ImageIdentity {
            name: tag(TAG_NAME)?,
            version: tag(TAG_VERSION)?,
            blocks: tag(TAG_BLOCKS).filter(|v| !v.is_empty()),
            sha256: tag(TAG_SHA256).filter(|v| !v.is_empty()),
        };
        (id.blocks.is_some() || id.sha256.is_some()).then_some(id)
    }

    /// The digests for people: `blocks sha256 X`, `sha256 Y`, or both.
    pub fn digests(&self) -> String {
        let mut parts = Vec::new();
        if let Some(b) = &self.blocks {
            parts.push(format!("blocks sha256 {b}"));
        }
        if let Some(s) = &self.sha256 {
            parts.push(format!("sha256 {s}"));
        }
        match parts.is_empty() {
            true => "no digest".into(),
            false => parts.join(", "),
        }
    }
}

/// The tags kiln puts on snapshots and images, as (key, value) pairs: a digest only when known.
pub fn kiln_tags(id: &ImageIdentity) -> Vec<(String, String)> {
    let mut tags = vec![
        (TAG_NAME.into(), id.name.clone()),
        (TAG_VERSION.into(), id.version.clone()),
    ];
    if let Some(b) = &id.blocks {
        tags.push((TAG_BLOCKS.into(), b.clone()));
    }
    if let Some(s) = &id.sha256 {
        tags.push((TAG_SHA256.into(), s.clone()));
    }
    tags.push((
        TAG_KILN_VERSION.into(),
        env!("CARGO_PKG_VERSION").to_string(),
    ));
    tags
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(blocks: Option<&str>, sha256: Option<&str>) -> ImageIdentity {
        ImageIdentity {
            name: "web".into(),
            version: "1".into(),
            blocks: blocks.map(str::to_string),
            sha256: sha256.map(str::to_string),
        }
    }

    #[test]
    fn the_same_disk_by_blocks_else_by_sha256() {
        let new = id(Some("b1"), None);
        assert!(new.same_disk(&id(Some("b1"), Some("s1"))));
        assert!(!new.same_disk(&id(Some("b2"), None)));
        // An earlier kiln's image: only its sha256 can say, and only if this side knows it.
        let old = id(None, Some("s1"));
        assert!(!new.same_disk(&old));
        assert!(id(Some("b1"), Some("s1")).same_disk(&old));
        assert!(!id(Some("b1"), Some("s2")).same_disk(&old));
        // Digests that disagree are never the same disk.
        assert!(!id(Some("b1"), Some("s1")).same_disk(&id(Some("b1"), Some("s2"))));
        // Name and version alone never match.
        assert!(!id(None, None).same_disk(&id(None, None)));
    }

    #[test]
    fn tags_carry_only_known_digests() {
        let keys = |i: &ImageIdentity| -> Vec<String> {
            kiln_tags(i).into_iter().map(|(k, _)| k).collect()
        };
        assert_eq!(
            keys(&id(Some("b"), None)),
            [TAG_NAME, TAG_VERSION, TAG_BLOCKS, TAG_KILN_VERSION]
        );
        assert_eq!(
            keys(&id(Some("b"), Some("s"))),
            [
                TAG_NAME,
                TAG_VERSION,
                TAG_BLOCKS,
                TAG_SHA256,
                TAG_KILN_VERSION
            ]
        );
        let t = kiln_tags(&id(None, Some("s")));
        assert_eq!(ImageIdentity::from_tags(&t), Some(id(None, Some("s"))));
        let bare = kiln_tags(&id(None, None));
        assert_eq!(
            ImageIdentity::from_tags(&bare),
            None,
            "no digest: not kiln's"
        );
    }
}
