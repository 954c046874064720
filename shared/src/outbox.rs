//! The outbox as a sans-IO state machine (quinn-proto style).
