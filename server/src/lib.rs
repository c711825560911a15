//! The `crevid` server: it only starts things. Everything it serves lives in `app`.

pub mod config;
pub mod site;
pub mod startup;
pub mod telemetry;
