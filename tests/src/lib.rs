//! rangersync-e2e (skeleton)
