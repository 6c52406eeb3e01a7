//! CPU and memory of the processes under test, from `/proc`.

use std::{collections::BTreeMap, time::Instant};

use anyhow::Context;

/// Linux `USER_HZ`: the unit of utime/stime in `/proc/PID/stat`.
const TICKS_PER_S: f64 = 100.0;

/// `VmRSS` and `VmHWM` of a process, KiB.
pub(crate) struct ProcStatus {
    pub(crate) rss_kib: u64,
    pub(crate) hwm_kib: u64,
}

pub(crate) fn proc_status(pid: u32) -> anyhow::Result<ProcStatus> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let field = |name: &str| -> anyhow::Result<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("no {name} in /proc/{pid}/status"))
    };
    Ok(ProcStatus {
        rss_kib: field("VmRSS:")?,
        hwm_kib: field("VmHWM:")?,
    })
}

/// `(comm, utime + stime)` from the text of a `/proc/.../stat` file.
fn stat_ticks(stat: &str) -> Option<(String, u64)> {
    // `pid (comm) state ...`: comm may hold spaces, so split at the last ')'.
    let (open, close) = (stat.find('(')?, stat.rfind(')')?);
    let comm = stat.get(open + 1..close)?.to_owned();
    let rest: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) are the 12th and 13th after comm.
    let ticks = |i: usize| rest.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    Some((comm, ticks(11) + ticks(12)))
}

/// CPU ticks of a process at one moment.
#[derive(Default, Clone)]
struct Ticks {
    /// The whole process (exited threads included).
    total: u64,
    /// Its main thread (Tarantool's tx thread).
    main: u64,
    /// Live threads by name.
    threads: BTreeMap<String, u64>,
}

fn cpu_ticks(pid: u32) -> Ticks {
    let read = |path: String| {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|s| stat_ticks(&s))
    };
    let mut t = Ticks {
        total: read(format!("/proc/{pid}/stat")).map_or(0, |(_, t)| t),
        main: read(format!("/proc/{pid}/task/{pid}/stat")).map_or(0, |(_, t)| t),
        threads: BTreeMap::new(),
    };
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            if let Some((comm, n)) = std::fs::read_to_string(task.path().join("stat"))
                .ok()
                .and_then(|s| stat_ticks(&s))
            {
                *t.threads.entry(comm).or_default() += n;
            }
        }
    }
    t
}

/// CPU seconds one process used over a phase.
#[derive(Default, Clone, Copy)]
pub(crate) struct Used {
    /// The whole process.
    pub(crate) total_s: f64,
    /// Its main thread (Tarantool's tx thread; for the Rust processes the
    /// runtime's first thread, not meaningful on its own).
    pub(crate) main_s: f64,
}

/// What every process used over a phase, by label.
pub(crate) struct PhaseCpu {
    pub(crate) used: BTreeMap<&'static str, Used>,
}

impl PhaseCpu {
    /// The usage of `label` (zero when unknown).
    pub(crate) fn get(&self, label: &str) -> Used {
        self.used.get(label).copied().unwrap_or_default()
    }
}

/// Per-process (and per-thread-name) CPU share over a phase.
pub(crate) struct CpuProbe {
    procs: Vec<(&'static str, u32)>,
    start: Vec<Ticks>,
    at: Instant,
}

impl CpuProbe {
    pub(crate) fn new(procs: Vec<(&'static str, u32)>) -> Self {
        Self {
            procs,
            start: Vec::new(),
            at: Instant::now(),
        }
    }

    pub(crate) fn replace(&mut self, label: &str, pid: u32) {
        for p in &mut self.procs {
            if p.0 == label {
                p.1 = pid;
            }
        }
    }

    pub(crate) fn start(&mut self) {
        self.start = self.procs.iter().map(|(_, pid)| cpu_ticks(*pid)).collect();
        self.at = Instant::now();
    }

    /// Prints `cpu phase=… label=P% (thread=P% …) …` in percent of one core
    /// (`exited=` is the time of threads that ended during the phase) and
    /// returns the CPU seconds of each process.
    pub(crate) fn report(&self, phase: &str) -> PhaseCpu {
        let wall = self.at.elapsed().as_secs_f64().max(1e-9);
        let pct = |ticks: u64| ticks as f64 / TICKS_PER_S / wall * 100.0;
        let mut line = format!("cpu phase=\"{phase}\" wall_s={wall:.2}");
        let mut sum = 0;
        let mut used = BTreeMap::new();
        for ((label, pid), before) in self.procs.iter().zip(&self.start) {
            let now = cpu_ticks(*pid);
            let total = now.total.saturating_sub(before.total);
            sum += total;
            used.insert(
                *label,
                Used {
                    total_s: total as f64 / TICKS_PER_S,
                    main_s: now.main.saturating_sub(before.main) as f64 / TICKS_PER_S,
                },
            );
            let mut threads = Vec::new();
            let mut live = 0;
            for (name, t) in &now.threads {
                let d = t.saturating_sub(before.threads.get(name).copied().unwrap_or(0));
                live += d;
                if d > 0 {
                    threads.push(format!("{name}={:.0}", pct(d)));
                }
            }
            if total > live {
                threads.push(format!("exited={:.0}", pct(total - live)));
            }
            line.push_str(&format!(
                " {label}={:.0}% ({})",
                pct(total),
                threads.join(" ")
            ));
        }
        line.push_str(&format!(" all={:.0}%", pct(sum)));
        println!("{line}");
        PhaseCpu { used }
    }
}

/// CPU-µs per row of the native pair and of tcf over one round (goal 2 of
/// issue 13): gateway and destination (whole processes), and the tx (main)
/// thread of the target against the native replica's.
pub(crate) fn print_per_row(round: u64, native: &PhaseCpu, tcf: &PhaseCpu, rows: u64) {
    let us = |s: f64| s * 1e6 / rows.max(1) as f64;
    let (gw, dest) = (
        us(tcf.get("gateway").total_s),
        us(tcf.get("destination").total_s),
    );
    let (b_tx, r_tx) = (
        us(tcf.get("b_master").main_s),
        us(native.get("native_replica").main_s),
    );
    let ok = |v: f64, goal: f64| if v <= goal { "ok" } else { "OVER" };
    let ratio = b_tx / r_tx.max(1e-9);
    println!(
        "cpu_us_per_row round={round} rows={rows} gateway={gw:.2} ({}, goal<=0.35) \
         destination={dest:.2} ({}, goal<=0.2) target_tx={b_tx:.2} native_replica_tx={r_tx:.2} \
         target_tx_vs_native_replica_tx={ratio:.2} ({}, goal<=1.2) target_all={:.2} \
         native_replica_all={:.2} source_master_all={:.2} native_master_all={:.2} \
         tcf_path_all={:.2} native_path_all={:.2}",
        ok(gw, 0.35),
        ok(dest, 0.2),
        ok(ratio, 1.2),
        us(tcf.get("b_master").total_s),
        us(native.get("native_replica").total_s),
        us(tcf.get("a_master").total_s),
        us(native.get("native_master").total_s),
        us(tcf.get("a_master").total_s
            + tcf.get("b_master").total_s
            + tcf.get("gateway").total_s
            + tcf.get("destination").total_s),
        us(native.get("native_master").total_s + native.get("native_replica").total_s),
    );
}
