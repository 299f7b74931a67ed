//! What the integration tests share: loopback servers and runners.
#![allow(dead_code)]

pub mod cli;
pub mod h2_server;
pub mod mock_server;
pub mod port;
pub mod postgres;
pub mod program;
