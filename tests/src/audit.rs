//! Helpers for auditor tests (export bundles, verifiers in other languages).
