//! The server over real HTTP: each test starts its own server on a free port with its own
//! database, and talks to it with reqwest.

mod common;

mod auth_and_cors;
mod captured;
mod export;
mod faults;
mod pull;
mod push;
mod server;
