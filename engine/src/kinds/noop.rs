//! `noop`: does nothing (or sleeps, or echoes a payload). Inputs: any. Outputs: `out` when
//! `payload` is set. Params: `payload` (string), `sleep_ms`. Resources: whatever the task says.

use crate::kind::{ParamError, TaskCtx, TaskError, TaskKind, typed_params};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoopParams {
    /// Written as output `out`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
    /// Sleep this long (tests of scheduling and interruption).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub sleep_ms: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

pub struct Noop;

impl TaskKind for Noop {
    fn name(&self) -> &'static str {
        "noop"
    }
    fn version(&self) -> u32 {
        1
    }
    fn describe(&self) -> &'static str {
        "does nothing; optional `payload` becomes output `out`, optional `sleep_ms`"
    }
    fn check_params(&self, params: &Value) -> Result<Value, ParamError> {
        typed_params::<NoopParams>(params).map(|(_, v)| v)
    }
    fn outputs(&self, params: &Value) -> Vec<String> {
        if params.get("payload").is_some() {
            vec!["out".into()]
        } else {
            vec![]
        }
    }
    fn run(&self, ctx: &mut TaskCtx) -> Result<(), TaskError> {
        let p: NoopParams = ctx.params()?;
        let mut left = p.sleep_ms;
        while left > 0 {
            ctx.check_cancelled()?;
            let step = left.min(20);
            std::thread::sleep(std::time::Duration::from_millis(step));
            left -= step;
        }
        if let Some(payload) = p.payload {
            ctx.output_bytes("out", payload.into_bytes())?;
        }
        Ok(())
    }
}
