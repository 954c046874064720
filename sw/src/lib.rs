//! rangersync-sw (skeleton)
