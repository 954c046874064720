//! The protocol tests of `tests/api/` against a real PostgreSQL: each test gets a new
//! database on the server `RANGERSYNC_TEST_PG` names, or on a throwaway cluster this binary
//! starts (see `rangersync_server::test_postgres`). The modules are the same files as the
//! SQLite run, so both backends pass one suite.

/// The database these tests run against.
pub const BACKEND: common::Backend = common::Backend::Postgres;

#[path = "api/common.rs"]
mod common;

#[path = "api/auth_and_cors.rs"]
mod auth_and_cors;
#[path = "api/backups.rs"]
mod backups;
#[path = "api/blobs.rs"]
mod blobs;
#[path = "api/captured.rs"]
mod captured;
#[path = "api/clocks.rs"]
mod clocks;
#[path = "api/export.rs"]
mod export;
#[path = "api/faults.rs"]
mod faults;
#[path = "api/guard.rs"]
mod guard;
#[path = "api/instances.rs"]
mod instances;
#[path = "api/isolation.rs"]
mod isolation;
#[path = "api/limits.rs"]
mod limits;
#[path = "api/postgres_connection_loss.rs"]
mod postgres_connection_loss;
#[path = "api/postgres_instances_start.rs"]
mod postgres_instances_start;
#[path = "api/pull.rs"]
mod pull;
#[path = "api/push.rs"]
mod push;
#[path = "api/restore.rs"]
mod restore;
#[path = "api/retention.rs"]
mod retention;
#[path = "api/server.rs"]
mod server;
#[path = "api/users.rs"]
mod users;
