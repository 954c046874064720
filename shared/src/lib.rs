//! # rangersync-shared
//!
//! Everything of rangersync that needs no browser: the wire types of PROTOCOL.md, the page ⇄
//! worker messages, which requests are captured, the status object, input validation, the retry policy, response
//! classification, the write clock, the conflict rule, the snapshot format, its encrypted envelope and what its restore re-queues, and the outbox as a sans-IO state
//! machine ([`outbox`]) that the service worker and the page fallback drive.
//!
//! Nothing here touches IndexedDB, the network or a clock: time and randomness are passed in,
//! so every rule is tested natively, deterministically, in milliseconds.

pub mod backup;
pub mod blob;
pub mod capture;
pub mod classify;
pub mod clock;
pub mod conflict;
pub mod messages;
pub mod outbox;
pub mod protocol;
pub mod requeue;
pub mod resync;
pub mod retry;
pub mod sealed;
pub mod snapshot;
pub mod status;
pub mod validate;
