//! What must differ on every instance is made on its first boot, never baked into the image:
//!
//! - SSH host keys: no `/etc/ssh/ssh_host_*` may be in the image (every instance would share
//!   it, and anyone with the AMI could impersonate them). cloud-init's `cc_ssh` makes them
//!   when cloud-init runs; kiln adds `kiln-ssh-hostkeys.service` (`ssh-keygen -A` before
//!   `ssh.service`, after cloud-init when it is installed), which makes any that are missing, so
//!   sshd starts on a machine where cloud-init finds no datasource too.
//! - `/etc/machine-id` stays empty (machine-id(5)): systemd makes it on first boot.

use super::error::ConfigureError;
use super::fsops;
use super::units::{self, Scope};
use crate::tree::{Kind, Time, Tree};

pub const HOSTKEYS_UNIT: &str = "kiln-ssh-hostkeys.service";

fn unit_text(cloud_init: bool) -> String {
    let after = if cloud_init {
        "After=cloud-init.service\n"
    } else {
        ""
    };
    format!(
        "# Made by kiln: SSH host keys are generated on each instance's first boot.\n\
         [Unit]\n\
         Description=Generate missing SSH host keys\n\
         Before=ssh.service\n\
         {after}\
         ConditionPathExists=/usr/bin/ssh-keygen\n\
         \n\
         [Service]\n\
         Type=oneshot\n\
         ExecStart=/usr/bin/ssh-keygen -A\n\
         RemainAfterExit=yes\n\
         \n\
         [Install]\n\
         WantedBy=ssh.service\n"
    )
}

/// Refuses host keys in the tree, installs the host-key unit where sshd is, and empties
/// `/etc/machine-id` where it exists.
pub fn apply(tree: &mut Tree, sde: Time) -> Result<(), ConfigureError> {
    let keys: Vec<String> = fsops::glob(tree, "/etc/ssh/ssh_host_*");
    if let Some(k) = keys.first() {
        return Err(ConfigureError::Image {
            path: k.clone(),
            problem: "an SSH host key in the image would be shared by every instance; remove it from the recipe (kiln makes them on first boot)".into(),
        });
    }
    if fsops::is_file(tree, "/usr/sbin/sshd")
        && units::find_unit(tree, Scope::System, "ssh.service").is_some()
    {
        let cloud_init = units::find_unit(tree, Scope::System, "cloud-init.service").is_some();
        let path = format!("/etc/systemd/system/{HOSTKEYS_UNIT}");
        fsops::write_file(
            tree,
            &path,
            unit_text(cloud_init).into_bytes(),
            0o644,
            0,
            0,
            sde,
        )?;
        units::enable(tree, Scope::System, &[HOSTKEYS_UNIT], sde).map_err(|problem| {
            ConfigureError::Tree {
                path: path.clone(),
                problem,
            }
        })?;
    }
    if let Some(id) = fsops::lookup(tree, "/etc/machine-id", false) {
        if matches!(tree.node(id).kind, Kind::File(_)) {
            fsops::write_file(tree, "/etc/machine-id", Vec::new(), 0o444, 0, 0, sde)?;
        }
    }
    Ok(())
}
