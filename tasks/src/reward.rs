//! Reward mixing and optimality probability (method-spec §3).
