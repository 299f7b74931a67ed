//! Helpers shared by integration tests. Each test binary that needs them
//! says `mod support;`; not every binary uses every helper.
#![allow(dead_code)]

pub mod mock_server;
