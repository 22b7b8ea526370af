//! The work of `ema` (declared in [`cocoflow_tasks::kinds::ema`]): the run function the
//! worker binary registers.

use super::{lora_config, set_threads};
use crate::error::fail;
use crate::models::BaseModel;
use crate::nft::ema::EmaSchedule;
use crate::rl::state::{self, LoadedState, STATE_FILE};
use cocoflow_engine::kind::{TaskCtx, TaskError};
pub use cocoflow_tasks::kinds::ema::*;

/// The EMA schedule the params describe.
pub fn schedule(d: &DecayParams) -> EmaSchedule {
    match *d {
        DecayParams::LinearCapped { rate, cap } => EmaSchedule::LinearCapped { rate, cap },
        DecayParams::Delayed { delay, rate, cap } => EmaSchedule::Delayed { delay, rate, cap },
        DecayParams::Constant { eta } => EmaSchedule::Constant { eta },
    }
}

pub fn run(_: &EmaKind, p: EmaParams, ctx: &mut TaskCtx) -> Result<(), TaskError> {
    set_threads(1);
    let input = ctx.input_path("state")?;
    let out = ctx.workdir()?.join("state");
    if state::is_state(&input) {
        state::copy_tree(&input, &out)?;
    } else {
        // The base model directory: a fresh state (θ_old = θ) from the model in it.
        state::read_info(&input)?;
        let lora = lora_config(p.lora_rank, p.lora_alpha, p.lora_init_seed);
        let st: LoadedState = state::load(
            &BaseModel::uncached(&input),
            &input,
            tch::Device::Cpu,
            &lora,
        )?;
        st.save(&out)?;
    }
    debug_assert!(out.join(STATE_FILE).is_file());
    let eta = state::apply_ema(
        &out,
        &schedule(&p.decay),
        serde_json::to_value(&p).map_err(fail)?,
    )
    .map_err(fail)?;
    ctx.metric("eta", eta);
    ctx.output_dir("state", &out)
}
