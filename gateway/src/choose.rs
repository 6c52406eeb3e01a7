//! Choosing the source instance to read: IPROTO_VOTE every listed instance of
//! the replicaset and take one that still has the rows after the position,
//! preferring read-only replicas (less load on the master).

use std::time::Duration;

use tcf_iproto::{Ballot, ConnectOptions, Vclock, vote};

/// The outcome of a choice.
#[derive(Debug)]
pub(crate) enum Choice {
    /// Read this instance.
    Use { uri: String, ballot: Ballot },
    /// No instance answered.
    Unreachable(String),
    /// Every reachable instance has dropped the xlogs after the position.
    Gap { oldest_kept: Vclock },
    /// The position is ahead of every instance that still has the rows.
    Ahead { newest: Vclock },
}

/// The newest vclock any instance reports (component-wise maximum), and the
/// ballots in config order (the error where an instance did not answer).
pub(crate) async fn ballots(
    instances: &[String],
    opts: &ConnectOptions,
    limit: Duration,
) -> Vec<(String, Result<Ballot, String>)> {
    let asks = instances.iter().map(|uri| async move {
        let b = match tokio::time::timeout(limit, vote(uri, opts)).await {
            Ok(Ok(b)) => Ok(b),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no ballot within {limit:?}")),
        };
        (uri.clone(), b)
    });
    futures::future::join_all(asks).await
}

/// Each instance that did not answer, with why: `uri: cause; ...`.
pub(crate) fn unreachable(ballots: &[(String, Result<Ballot, String>)]) -> String {
    ballots
        .iter()
        .filter_map(|(u, b)| b.as_ref().err().map(|e| format!("{u}: {e}")))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Merges the vclocks of every reachable instance.
pub(crate) fn newest(ballots: &[(String, Result<Ballot, String>)]) -> Vclock {
    let mut v = Vclock::new();
    for b in ballots.iter().filter_map(|(_, b)| b.as_ref().ok()) {
        v.merge(&b.vclock.without_local());
    }
    v
}

/// Picks an instance for reading after `position` (`None`: an initial load
/// or the current position, anything reachable will do), avoiding `avoid`
/// (the instance that just failed) when another one qualifies.
pub(crate) fn choose(
    ballots: &[(String, Result<Ballot, String>)],
    position: Option<&Vclock>,
    avoid: Option<&str>,
) -> Choice {
    let reachable: Vec<(&String, &Ballot)> = ballots
        .iter()
        .filter_map(|(u, b)| b.as_ref().ok().map(|b| (u, b)))
        .collect();
    if reachable.is_empty() {
        return Choice::Unreachable(format!(
            "no instance answered IPROTO_VOTE: {}",
            unreachable(ballots)
        ));
    }
    let has_rows: Vec<&(&String, &Ballot)> = reachable
        .iter()
        .filter(|(_, b)| position.is_none_or(|p| b.has_rows_after(p)))
        .collect();
    if has_rows.is_empty() {
        let mut oldest_kept = Vclock::new();
        for (_, b) in &reachable {
            oldest_kept.merge(&b.gc_vclock.without_local());
        }
        return Choice::Gap { oldest_kept };
    }
    let usable: Vec<&&(&String, &Ballot)> = has_rows
        .iter()
        .filter(|(_, b)| position.is_none_or(|p| p.without_local().le(&b.vclock.without_local())))
        .collect();
    if usable.is_empty() {
        let mut newest = Vclock::new();
        for (_, b) in &has_rows {
            newest.merge(&b.vclock.without_local());
        }
        return Choice::Ahead { newest };
    }
    let rank = |(uri, b): &(&String, &Ballot)| (Some(uri.as_str()) == avoid, !b.is_ro);
    let best = usable.iter().min_by_key(|c| rank(c)).copied();
    match best {
        Some((uri, b)) => Choice::Use {
            uri: (*uri).clone(),
            ballot: (*b).clone(),
        },
        None => Choice::Unreachable("no usable instance".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(ro: bool, vclock: u64, gc: u64) -> Result<Ballot, String> {
        Ok(Ballot {
            is_ro: ro,
            is_ro_cfg: ro,
            vclock: [(1, vclock)].into_iter().collect(),
            gc_vclock: [(1, gc)].into_iter().collect(),
        })
    }

    fn at(lsn: u64) -> Vclock {
        [(1, lsn)].into_iter().collect()
    }

    fn uri(c: Choice) -> String {
        match c {
            Choice::Use { uri, .. } => uri,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn prefers_a_read_only_instance_that_has_the_rows() {
        let ballots = vec![
            ("m".to_owned(), b(false, 100, 10)),
            ("r".to_owned(), b(true, 100, 10)),
        ];
        assert_eq!(uri(choose(&ballots, Some(&at(50)), None)), "r");
        assert_eq!(
            uri(choose(&ballots, Some(&at(50)), Some("r"))),
            "m",
            "avoids the failed one"
        );
        // The replica lost the rows (newer checkpoint): the master still has them.
        let ballots = vec![
            ("m".to_owned(), b(false, 100, 10)),
            ("r".to_owned(), b(true, 100, 60)),
        ];
        assert_eq!(uri(choose(&ballots, Some(&at(50)), None)), "m");
    }

    #[test]
    fn gap_only_when_no_instance_has_the_rows() {
        let ballots = vec![
            ("m".to_owned(), b(false, 100, 60)),
            ("r".to_owned(), Err("refused".into())),
        ];
        assert!(matches!(
            choose(&ballots, Some(&at(50)), None),
            Choice::Gap { .. }
        ));
    }

    #[test]
    fn ahead_of_every_instance() {
        let ballots = vec![
            ("m".to_owned(), b(false, 40, 10)),
            ("r".to_owned(), b(true, 30, 10)),
        ];
        assert!(matches!(
            choose(&ballots, Some(&at(50)), None),
            Choice::Ahead { .. }
        ));
        let none = vec![("m".to_owned(), Err("refused".into()))];
        assert!(matches!(
            choose(&none, Some(&at(50)), None),
            Choice::Unreachable(_)
        ));
    }
}
