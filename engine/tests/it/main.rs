//! Integration tests of the engine binary (built-in kinds only, no libtorch): one test
//! binary, one module per area.

mod common;
mod crash;
mod errors;
mod events;
mod injection;
mod library;
mod maintenance;
mod runs;
mod s3;
mod slurm;
