//! Integration tests of the full `cocoflow` binary (every kind, a fresh state directory per
//! test), one test binary with a module per area.

mod cli;
mod flux_e2e;
mod qwen_e2e;
mod resume;
mod rl_resume;
mod ui;
mod webdriver;
mod workers;
