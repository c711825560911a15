//! Everything server functions and REST handlers call. Server-only (`ssr` feature).

pub mod auth;
pub mod contents;
pub mod crypto;
pub mod db;
pub mod engine;
pub mod error;
pub mod jobs;
pub mod limits;
pub mod llm;
pub mod media;
pub mod openai;
pub mod providers;
pub mod qstash;
pub mod render;
pub mod rest;
pub mod script;
pub mod script_answer;
pub mod security;
pub mod settings;
pub mod splitter;
pub mod state;
pub mod status;
pub mod text_layout;
pub mod tokens;
pub mod users;
pub mod validate;
