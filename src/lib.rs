//! lethe: a privacy-compliance engine driven by one declarative policy model.
//!
//! `policy/` is the model every other module reads; `register/` and `notice/` derive the
//! Art. 30 register and the privacy notice from it without I/O; `store/` is the engine's
//! own database; `sources/` talks to the company's databases; `http/` and `cli/` are the
//! two ways in, and `app` wires the running service for `serve` and the tests.
#![forbid(unsafe_code)]

pub mod app;
pub mod audit;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod dsr;
pub mod fault;
pub mod http;
pub mod identity;
pub mod jobs;
pub mod notice;
pub mod notify;
pub mod policy;
pub mod redact;
pub mod register;
pub mod requests;
pub mod retention;
pub mod sources;
pub mod store;
pub mod vendors;
