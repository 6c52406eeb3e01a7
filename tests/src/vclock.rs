//! Vector clocks as the harness reads them from `box.info.vclock`.

use std::time::Duration;

use anyhow::{Context, bail};
use rmpv::Value;
use tcf_iproto::{ConnectOptions, Connection};

use crate::value::first;
use crate::{ADMIN_PASSWORD, ADMIN_USER};

pub use tcf_iproto::Vclock;

/// Lua returning `box.info.vclock` as a list of `{id, lsn}` pairs, without
/// component 0 (a Lua table with holes would not encode as a plain array).
pub const VCLOCK_LUA: &str = r#"
local vc = {}
for id, lsn in pairs(box.info.vclock) do
    if id ~= 0 then table.insert(vc, {id, lsn}) end
end
return vc
"#;

/// Parses the `{{id, lsn}, ...}` list produced by [`VCLOCK_LUA`].
pub fn parse_vclock(v: &Value) -> anyhow::Result<Vclock> {
    let Value::Array(pairs) = v else {
        bail!("vclock: expected an array of pairs, got {v}");
    };
    let mut out = Vclock::new();
    for p in pairs {
        let (id, lsn) = match p.as_array().map(Vec::as_slice) {
            Some([id, lsn]) => (id.as_u64(), lsn.as_u64()),
            _ => bail!("vclock: bad pair {p}"),
        };
        let id = id
            .and_then(|i| u32::try_from(i).ok())
            .with_context(|| format!("vclock id {p}"))?;
        let lsn = lsn.with_context(|| format!("vclock lsn {p}"))?;
        out.set(id, lsn);
    }
    Ok(out)
}

/// Reads the vclock of the instance at `uri` over a fresh admin connection.
pub(crate) async fn master_vclock(uri: &str) -> anyhow::Result<Vclock> {
    let opts = ConnectOptions::new()
        .credentials(ADMIN_USER, ADMIN_PASSWORD)
        .connect_timeout(Duration::from_secs(5))
        .request_timeout(Duration::from_secs(10));
    let conn = Connection::connect(uri, &opts).await?;
    let v = first(conn.eval(VCLOCK_LUA, &[] as &[Value]).await?);
    parse_vclock(&v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pairs() {
        let v = Value::Array(vec![
            Value::Array(vec![1.into(), 10.into()]),
            Value::Array(vec![2.into(), 3.into()]),
        ]);
        let a = parse_vclock(&v).expect("parse");
        assert_eq!(a, [(1, 10), (2, 3)].into_iter().collect::<Vclock>());
    }
}
