//! One module per subcommand.

pub mod config;
pub mod demo;
pub mod generate;
pub mod migrate;
pub mod run;
