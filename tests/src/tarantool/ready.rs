//! Readiness and other conditions a [`Tarantool`] instance is polled for.

use std::time::Duration;

use rmpv::Value;

use super::Tarantool;
use crate::lua::Role;
use crate::vclock::{Vclock, master_vclock, parse_vclock};
use crate::wait::{Outcome, wait_until};

/// Lua returning `(ready_flag, status, {upstream statuses}, vclock pairs)`.
const STATE_LUA: &str = r#"
local up = {}
for _, r in pairs(box.info.replication) do
    if r.upstream ~= nil then table.insert(up, r.upstream.status) end
end
local vc = {}
for id, lsn in pairs(box.info.vclock) do
    if id ~= 0 then table.insert(vc, {id, lsn}) end
end
return rawget(_G, 'tcf_tests_ready') == true, box.info.status, up, vc
"#;

impl Tarantool {
    /// Waits (up to the start deadline) until the instance is ready: the admin
    /// can connect, the init script has finished, `box.info.status` is
    /// `running`; for a replica also every upstream is `follow` and its vclock
    /// has caught up with the master's. Fails at once if the process exits.
    pub async fn wait_ready(&self) -> anyhow::Result<()> {
        let what = format!("tarantool {} ({}) to be ready", self.label, self.uri());
        wait_until(&what, self.start_deadline, || self.readiness()).await
    }

    async fn readiness(&self) -> Outcome<()> {
        if let Some(status) = self.current_process().and_then(|p| p.exit_status()) {
            return Outcome::Failed(format!("the process exited ({status})"));
        }
        let state = match self.eval(STATE_LUA, &[]).await {
            Ok(Value::Array(a)) => a,
            Ok(other) => return Outcome::Pending(format!("unexpected state {other}")),
            Err(e) => return Outcome::Pending(format!("{e:#}")),
        };
        let desc = format!("{}", Value::Array(state.clone()));
        let mut it = state.into_iter();
        let (flag, status, up, vc) = (it.next(), it.next(), it.next(), it.next());
        if flag != Some(Value::Boolean(true))
            || status.as_ref().and_then(Value::as_str) != Some("running")
        {
            return Outcome::Pending(desc);
        }
        let Role::Replica { master_uri, .. } = &self.role else {
            return Outcome::Ready(());
        };
        let following = match up {
            Some(Value::Array(up)) => {
                !up.is_empty() && up.iter().all(|s| s.as_str() == Some("follow"))
            }
            _ => false,
        };
        if !following {
            return Outcome::Pending(desc);
        }
        let Some(Ok(mine)) = vc.as_ref().map(parse_vclock) else {
            return Outcome::Pending(desc);
        };
        match master_vclock(master_uri).await {
            Ok(m) if m.le(&mine) => Outcome::Ready(()),
            Ok(m) => Outcome::Pending(format!("{desc}; master vclock {m:?}")),
            Err(e) => Outcome::Pending(format!("{desc}; master vclock: {e:#}")),
        }
    }

    /// Polls `lua` (as admin) until its first returned value is `true`.
    pub async fn wait_lua(&self, what: &str, lua: &str, deadline: Duration) -> anyhow::Result<()> {
        let what = format!("{what} on {} (`{}`)", self.label, lua.trim());
        wait_until(&what, deadline, || async {
            match self.eval1(lua, &[]).await {
                Ok(Value::Boolean(true)) => Outcome::Ready(()),
                Ok(v) => Outcome::Pending(format!("returned {v}")),
                Err(e) => Outcome::Pending(format!("{e:#}")),
            }
        })
        .await
    }

    /// Waits until this instance's vclock is at least `target` in every component.
    pub async fn wait_vclock(&self, target: &Vclock, deadline: Duration) -> anyhow::Result<()> {
        let what = format!("{} to reach vclock {target:?}", self.label);
        wait_until(&what, deadline, || async {
            match self.vclock().await {
                Ok(v) if target.le(&v) => Outcome::Ready(()),
                Ok(v) => Outcome::Pending(format!("vclock {v:?}")),
                Err(e) => Outcome::Pending(format!("{e:#}")),
            }
        })
        .await
    }
}
