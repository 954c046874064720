//! rangersync-page (skeleton)
