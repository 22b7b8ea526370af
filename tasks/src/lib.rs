//! cocoflow's tasks: the ML work a workflow step runs, on libtorch through `tch`.

pub mod device;

#[cfg(test)]
mod tests;
