//! Shared fixtures for the cxpulse benchmarks.
