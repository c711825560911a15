//! Integration tests: one binary, the real app on port 0, SQLite and Postgres.

mod helpers;

mod access;
mod auth;
mod clips;
mod contents;
mod generate;
mod input;
mod jobs;
mod metrics;
mod object_store;
mod openapi;
mod outbound;
mod pages;
mod pipeline;
mod profiles;
mod qstash;
mod render;
mod settings;
mod stock;
mod storage;
mod transitions;
mod visuals;
mod voices;
mod webhooks;
