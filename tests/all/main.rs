//! weir's integration and end-to-end tests, in one binary (wasmtime's layout):
//! each module links the library and drives the real `weir` binary on real
//! SQLite files, so linking once keeps CI's disk and link time small.

#[allow(dead_code)]
mod common;

mod access;
mod bad_input;
mod bulk;
mod containment;
mod contract;
mod crash;
mod db_layer;
mod egress;
mod fair_share;
mod hardening;
mod hardening_december;
mod hardening_io;
mod idempotency;
mod incident;
mod jobs_cli;
mod jobs_lib;
mod kit;
mod languages;
mod lifecycle;
mod lifecycle_faults;
mod nodes;
mod operator_details;
mod orchestration;
mod otel;
mod pipeline_cli;
mod pipeline_lib;
mod plugins_cli;
mod properties;
mod runtime;
mod security;
mod serve_http;
mod steps_in_place;
mod traces;
mod users;
mod versions;
mod waits_cli;
