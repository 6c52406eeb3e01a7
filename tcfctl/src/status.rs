//! `tcfctl status` and `tcfctl history`: the overview of both clusters
//! (`GET /tcf/api/v1/overview`, [`Overview`]) as tables.

use std::fmt::Write as _;

use tcf_api::{
    operator::Overview,
    replicator::{DestinationStatus, GatewayStatus},
    worker::{HistoryEntry, Info, Reported},
};

use crate::render::{Table, time};

/// The peer's info when it answered.
fn peer(o: &Overview) -> Option<&Info> {
    match &o.peer {
        Some(Reported::Status(i)) => Some(i),
        _ => None,
    }
}

/// The info of `cluster`'s worker, when the overview has it.
fn info_of<'a>(o: &'a Overview, cluster: &str) -> Option<&'a Info> {
    if o.worker.cluster == cluster {
        Some(&o.worker)
    } else {
        peer(o).filter(|p| p.cluster == cluster)
    }
}

/// Everything `status` prints.
pub(crate) fn render(o: &Overview) -> String {
    let w = &o.worker;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "federation {}  term {}  coordinator {}  (as seen by {} at {} UTC)",
        w.federation,
        w.term.map_or("?".into(), |t| t.to_string()),
        w.leader.as_deref().unwrap_or("none"),
        w.worker,
        time(o.at_ms)
    );
    out.push('\n');
    out.push_str(&clusters(o).render());
    out.push('\n');
    out.push_str(&replication(w).render());
    out.push('\n');
    out.push_str(&switch_line(w));
    out.push('\n');
    let alarms = alarms(o);
    if alarms.is_empty() {
        out.push_str("alarms: none\n");
    } else {
        out.push_str("alarms:\n");
        for a in alarms {
            let _ = writeln!(out, "  ! {a}");
        }
    }
    out
}

fn clusters(o: &Overview) -> Table {
    let mut t = Table::new(&[
        "CLUSTER",
        "STATUS",
        "LB (is_active)",
        "FENCE",
        "STATE",
        "UNMARKED WRITES",
    ]);
    let names: Vec<String> = match &o.worker.clusters {
        Some(c) => c.keys().cloned().collect(),
        None => vec![o.worker.cluster.clone(), o.worker.peer.clone()],
    };
    for name in names {
        let status = o
            .worker
            .clusters
            .as_ref()
            .and_then(|c| c.get(&name))
            .map_or("unknown".into(), ToString::to_string);
        let lb: Vec<String> =
            o.lb.iter()
                .filter(|a| a.cluster == name)
                .map(|a| match a.code {
                    Some(c) => format!("{c} {}", a.answer),
                    None => "no answer".into(),
                })
                .collect();
        let (fence, state, unmarked) = match info_of(o, &name) {
            Some(i) => (
                i.fence.map_or("not applied".into(), |f| {
                    format!("{} @{}", if f.fenced { "fenced" } else { "open" }, f.term)
                }),
                if !i.confirmed {
                    "NOT confirmed".into()
                } else if i.stale {
                    "confirmed by peer".into()
                } else {
                    "confirmed".to_owned()
                },
                if i.unmarked_commits.alarm {
                    format!("ALARM {}", i.unmarked_commits.count)
                } else {
                    "none".into()
                },
            ),
            None => ("?".into(), "?".into(), "?".into()),
        };
        t.row(vec![name, status, lb.join(", "), fence, state, unmarked]);
    }
    t
}

fn replication(w: &Info) -> Table {
    let mut t = Table::new(&[
        "PAIR",
        "REPLICASET",
        "GATEWAY",
        "DESTINATION",
        "APPLIED",
        "LAG",
        "ROWS",
        "ERROR",
    ]);
    let Some(r) = &w.replicators else {
        t.row(vec!["(this worker drives no replicators)".into()]);
        return t;
    };
    for (list, from, to) in [
        (&r.outgoing, &w.cluster, &w.peer),
        (&r.incoming, &w.peer, &w.cluster),
    ] {
        for (i, pair) in list.iter().enumerate() {
            let label = if list.len() > 1 {
                format!("{from} -> {to} #{i}")
            } else {
                format!("{from} -> {to}")
            };
            pair_rows(&mut t, label, pair);
        }
    }
    t
}

/// The rows of one pair, labelled `label`: one per replicaset its
/// destination reports.
fn pair_rows(t: &mut Table, label: String, pair: &tcf_api::worker::PairInfo) {
    {
        let gw: Option<&GatewayStatus> = match &pair.gateway {
            Reported::Status(g) => Some(g),
            Reported::Error { .. } => None,
        };
        let d: &DestinationStatus = match &pair.destination {
            Reported::Status(d) => d,
            Reported::Error { error } => {
                t.row(vec![
                    label,
                    "-".into(),
                    "-".into(),
                    "no answer".into(),
                    String::new(),
                    String::new(),
                    String::new(),
                    error.clone(),
                ]);
                return;
            }
        };
        let states = d.states();
        for (rs, s) in &d.replicasets {
            let gstate = match gw {
                Some(g) if !g.running => "stopped".into(),
                Some(g) => g
                    .replicasets
                    .get(rs)
                    .map_or("-".into(), |x| x.state.to_string()),
                None => "no answer".into(),
            };
            t.row(vec![
                label.clone(),
                rs.clone(),
                gstate,
                states.get(rs).map_or("?".into(), ToString::to_string),
                s.applied_vclock.to_string(),
                format!("{:.3}s", s.lag_seconds),
                s.lag_lsn.to_string(),
                s.last_error.clone().unwrap_or_default(),
            ]);
        }
    }
}

fn switch_line(w: &Info) -> String {
    let Some(s) = &w.switch else {
        return "switch: none yet\n".into();
    };
    let mut line = format!(
        "switch: {} {} -> {}  phase {:?}  term {}  started {} UTC  by {}",
        s.kind,
        s.from,
        s.to,
        s.phase,
        s.term,
        time(s.started_ms),
        s.requested_by
    );
    if let Some(e) = &s.error {
        let _ = write!(line, "  error: {e}");
    }
    if let Some(e) = w.switch_error.as_ref().filter(|_| !s.phase.is_final()) {
        let _ = write!(line, "  waiting: {e}");
    }
    line.push('\n');
    line
}

/// Everything an operator should look at, one line each.
pub(crate) fn alarms(o: &Overview) -> Vec<String> {
    let mut out = Vec::new();
    let mut of = |i: &Info| {
        let who = &i.worker;
        if i.unmarked_commits.alarm {
            out.push(format!(
                "{who}: unmarked-write alarm: {} write(s) not made by tcf on cluster {}",
                i.unmarked_commits.count, i.cluster
            ));
        }
        if !i.confirmed {
            out.push(format!(
                "{who}: state not confirmed (is_active answers 503)"
            ));
        } else if i.stale {
            out.push(format!(
                "{who}: etcd not read within fencing_timeout (a peer confirms the state)"
            ));
        }
        for (what, e) in [
            ("etcd", &i.etcd_error),
            ("fence", &i.fence_error),
            ("replicators", &i.replicator_error),
        ] {
            if let Some(e) = e {
                out.push(format!("{who}: {what}: {e}"));
            }
        }
        if i.coordinator.leading {
            if let Some(p) = &i.coordinator.verdict.problem {
                out.push(format!("{who}: coordinator: {p}"));
            }
            if let Some(b) = &i.coordinator.verdict.failover_blocked {
                out.push(format!("{who}: automatic failover blocked: {b}"));
            }
        }
    };
    of(&o.worker);
    match &o.peer {
        Some(Reported::Status(p)) => of(p),
        Some(Reported::Error { error }) => out.push(format!("peer worker: {error}")),
        None => {}
    }
    let active: std::collections::BTreeSet<&str> =
        o.lb.iter()
            .filter(|a| a.code == Some(200))
            .map(|a| a.cluster.as_str())
            .collect();
    if active.len() != 1 {
        out.push(format!(
            "load balancers: {} cluster(s) answer 200 ({})",
            active.len(),
            active.into_iter().collect::<Vec<_>>().join(", ")
        ));
    }
    for a in
        o.lb.iter()
            .filter(|a| a.code.is_none() || a.code == Some(503))
    {
        out.push(format!("is_active of {}: {}", a.worker, a.answer));
    }
    out
}

/// `history` as a table, newest first.
pub(crate) fn history(h: &[HistoryEntry]) -> String {
    let mut t = Table::new(&["AT (UTC)", "KIND", "OUTCOME", "FROM", "TO", "TERM", "BY"]);
    for e in h {
        t.row(vec![
            time(e.at_ms),
            e.kind.to_string(),
            e.outcome.as_str().into(),
            e.from.clone(),
            e.to.clone(),
            e.term.to_string(),
            e.by.clone(),
        ]);
    }
    t.render()
}
