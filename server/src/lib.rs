//! rangersync-server (skeleton)
