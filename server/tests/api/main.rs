//! The server over real HTTP on SQLite: each test starts its own server on a free port with
//! its own database, and talks to it with reqwest. `tests/api_postgres.rs` runs the same
//! tests on PostgreSQL.

/// The database these tests run against.
pub const BACKEND: common::Backend = common::Backend::Sqlite;

mod common;

mod auth_and_cors;
mod backups;
mod blobs;
mod captured;
mod clocks;
mod export;
mod faults;
mod guard;
mod instances;
mod isolation;
mod limits;
mod pull;
mod push;
mod restore;
mod retention;
mod server;
mod users;
