//! One module per noun; each `run` turns a parsed command into requests and returns the text
//! to print (tables by default, the API's JSON with `--json`).

pub mod backup;
pub mod backup_schedule;
pub mod backup_storage;
pub mod cluster;
pub mod failover;
pub mod job;
pub mod leader;
pub mod machine;
pub mod meta;
pub mod node;
pub mod policy;
pub mod scale;
pub mod token;
pub mod xa;
