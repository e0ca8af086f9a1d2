//! `kiln push`: an OCI image layout to a registry (see the submodules).
