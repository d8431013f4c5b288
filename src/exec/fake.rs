//! Scripted executor for simulation tests (placeholder, filled in below).
