//! update-rc.d(8) (init-system-helpers 1.65) without insserv, as on every image kiln makes
//! from bookworm's packages: `defaults` links `/etc/rcN.d/S01NAME` for each `Default-Start`
//! runlevel and `K01NAME` for each `Default-Stop` runlevel of the script's LSB header, unless
//! any link for it exists; `remove` deletes them. Its systemd part only reloads a running
//! systemd, which an image has not.

use super::fsops;
use crate::tree::{Time, Tree};

/// `(Default-Start, Default-Stop)` of an init script's LSB header (its `parse_def_start_stop`).
pub fn parse_lsb(text: &str) -> (Vec<String>, Vec<String>) {
    let (mut start, mut stop) = (Vec::new(), Vec::new());
    let mut inside = false;
    for l in text.lines() {
        if l.trim_end() == "### BEGIN INIT INFO" {
            inside = true;
        } else if l.trim_end() == "### END INIT INFO" {
            break;
        } else if inside {
            if let Some(v) = l.strip_prefix("# Default-Start:") {
                start = v.split_whitespace().map(Into::into).collect();
            }
            if let Some(v) = l.strip_prefix("# Default-Stop:") {
                stop = v.split_whitespace().map(Into::into).collect();
            }
        }
    }
    (start, stop)
}

fn existing_links(tree: &Tree, name: &str) -> Vec<String> {
    fsops::glob(tree, "/etc/rc?.d/*")
        .into_iter()
        .filter(|p| {
            let b = p.rsplit('/').next().unwrap_or("");
            let bytes = b.as_bytes();
            bytes.len() > 3
                && (bytes[0] == b'S' || bytes[0] == b'K')
                && bytes[1].is_ascii_digit()
                && bytes[2].is_ascii_digit()
                && &b[3..] == name
        })
        .collect()
}

/// Runs `update-rc.d ARGS...`.
pub fn run(tree: &mut Tree, args: &[&str], sde: Time) -> Result<(), String> {
    if ["/sbin/insserv", "/usr/lib/insserv/insserv"]
        .iter()
        .any(|p| fsops::is_file(tree, p))
        && fsops::lookup(tree, "/etc/insserv.conf", true).is_some()
    {
        return Err("insserv is installed; kiln orders init scripts only without it".into());
    }
    let args: Vec<&str> = args.iter().copied().filter(|a| *a != "-f").collect();
    let [name, action, ..] = args[..] else {
        return Err("update-rc.d needs a name and an action".into());
    };
    match action {
        "defaults" | "defaults-disabled" => {
            if !existing_links(tree, name).is_empty() {
                return Ok(());
            }
            let script = format!("/etc/init.d/{name}");
            let text = fsops::read_text(tree, &script)
                .ok_or_else(|| format!("initscript does not exist: {script}"))?;
            let (start, stop) = parse_lsb(&text);
            let s = if action == "defaults" { "S" } else { "K" };
            let target = format!("../init.d/{name}");
            for lvl in &start {
                fsops::symlink(tree, &format!("/etc/rc{lvl}.d/{s}01{name}"), &target, sde)
                    .map_err(|e| e.to_string())?;
            }
            for lvl in &stop {
                fsops::symlink(tree, &format!("/etc/rc{lvl}.d/K01{name}"), &target, sde)
                    .map_err(|e| e.to_string())?;
            }
            Ok(())
        }
        "remove" => {
            for l in existing_links(tree, name) {
                fsops::remove(tree, &l);
            }
            Ok(())
        }
        other => Err(format!("update-rc.d {other} is not handled")),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn lsb_header() {
        let (start, stop) = super::parse_lsb(
            "#!/bin/sh\n### BEGIN INIT INFO\n# Provides: ssh\n# Default-Start:     2 3 4 5\n# Default-Stop:\n### END INIT INFO\n# Default-Start: 1\n",
        );
        assert_eq!(start, ["2", "3", "4", "5"]);
        assert!(stop.is_empty());
    }
}
