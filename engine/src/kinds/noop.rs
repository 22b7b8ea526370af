//! `noop`: does nothing (or sleeps, or echoes a payload). Inputs: any. Outputs: `out` when
//! `payload` is set. Params: `payload` (string), `sleep_ms`. Resources: whatever the task says.

use crate::kind::{Kind, TaskCtx, TaskError};
use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Serialize, Deserialize, schemars::JsonSchema)]
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

impl Kind for Noop {
    type Params = NoopParams;
    const NAME: &'static str = "noop";
    const VERSION: u32 = 1;
    const DESCRIBE: &'static str =
        "does nothing; optional `payload` becomes output `out`, optional `sleep_ms`";

    /// Without a sleep, and with a payload that fits in the manifest, a noop is done in
    /// microseconds: the in-process executor runs it on the scheduler's thread.
    fn inline(&self, p: &NoopParams) -> bool {
        p.sleep_ms == 0
            && p.payload
                .as_ref()
                .is_none_or(|s| s.len() <= crate::store::INLINE_MAX)
    }

    fn outputs(&self, p: &NoopParams) -> Vec<String> {
        if p.payload.is_some() {
            vec!["out".into()]
        } else {
            vec![]
        }
    }
}

impl Noop {
    /// Does the work (the [`Kind`]'s run function).
    pub fn run(&self, p: NoopParams, ctx: &mut TaskCtx) -> Result<(), TaskError> {
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

#[cfg(test)]
mod tests {
    use crate::kind::Registry;
    use serde_json::json;

    #[test]
    fn only_a_noop_that_neither_sleeps_nor_carries_a_large_payload_is_inline() {
        let mut r = Registry::new();
        super::super::register(&mut r);
        let noop = r.get("noop").unwrap();
        let inline = |p: serde_json::Value| noop.inline(&noop.check_params(&p).unwrap());
        assert!(inline(json!({})));
        assert!(inline(
            json!({"payload": "x".repeat(crate::store::INLINE_MAX)})
        ));
        assert!(!inline(
            json!({"payload": "x".repeat(crate::store::INLINE_MAX + 1)})
        ));
        assert!(!inline(json!({"sleep_ms": 1})));
        // Params that do not check are never inline (the attempt reports the error).
        assert!(!noop.inline(&json!({"sleep_ms": "soon"})));
        assert!(!r.get("shell").unwrap().inline(&json!({"cmd": "true"})));
    }
}
