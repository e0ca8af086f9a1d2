//! `<image stem>.spdx.json`: an SPDX 2.3 software bill of materials (spdx.github.io/spdx-spec/v2.3)
//! listing the image and every installed package. Deterministic: the creation time is
//! `source_date_epoch` and the namespace is derived from the image's blocks digest (its identity,
//! see `sink::blocks`). The image's SHA-256 checksum is listed when the build computed it
//! (`--sha256`); SPDX 2.3 makes a package's checksums optional.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::manifest::PackageInfo;

/// `out/x.raw` → `out/x.spdx.json`.
pub fn sbom_path(image: &Path) -> PathBuf {
    let stem = image
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    image.with_file_name(format!("{stem}.spdx.json"))
}

/// SPDX ids allow letters, digits, `.` and `-` only.
fn spdx_id(i: usize, name: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("SPDXRef-Package-{i}-{clean}")
}

/// The SBOM document.
pub fn document(
    name: &str,
    version: &str,
    image_file: &str,
    blocks_sha256: &str,
    image_sha256: Option<&str>,
    source_date_epoch: i64,
    packages: &[PackageInfo],
) -> Value {
    let mut image = json!({
        "SPDXID": "SPDXRef-Image",
        "name": name,
        "versionInfo": version,
        "packageFileName": image_file,
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "primaryPackagePurpose": "OPERATING-SYSTEM",
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
    });
    if let Some(sha) = image_sha256 {
        image["checksums"] = json!([{"algorithm": "SHA256", "checksumValue": sha}]);
    }
    let mut pkgs = vec![image];
    let mut rels = vec![json!({
        "spdxElementId": "SPDXRef-DOCUMENT",
        "relationshipType": "DESCRIBES",
        "relatedSpdxElement": "SPDXRef-Image",
    })];
    for (i, p) in packages.iter().enumerate() {
        let id = spdx_id(i, &p.name);
        pkgs.push(json!({
            "SPDXID": id,
            "name": p.name,
            "versionInfo": p.version,
            "supplier": "NOASSERTION",
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "sourceInfo": format!("built package from: {}", p.source),
            "checksums": [{"algorithm": "SHA256", "checksumValue": p.sha256}],
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": "NOASSERTION",
            "copyrightText": "NOASSERTION",
            "externalRefs": [{
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": format!(
                    "pkg:deb/debian/{}@{}?arch={}",
                    p.name,
                    p.version.replace(':', "%3A").replace('+', "%2B"),
                    p.architecture
                ),
            }],
        }));
        rels.push(json!({
            "spdxElementId": "SPDXRef-Image",
            "relationshipType": "CONTAINS",
            "relatedSpdxElement": id,
        }));
    }
    json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": format!("{name}-{version}"),
        "documentNamespace": format!("https://kiln.invalid/spdx/{name}-{version}-{blocks_sha256}"),
        "creationInfo": {
            "created": rfc3339(source_date_epoch),
            "creators": [format!("Tool: kiln-{}", env!("CARGO_PKG_VERSION"))],
        },
        "packages": pkgs,
        "relationships": rels,
    })
}

/// Seconds since 1970 as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn rfc3339(secs: i64) -> String {
    let c = crate::util::civil(secs);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        c.year, c.month, c.day, c.hour, c.min, c.sec
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn times() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }
}
