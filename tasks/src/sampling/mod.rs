//! Flow-matching samplers (method-spec §6): σ schedules with time shift, `euler`, `dpm2`.
