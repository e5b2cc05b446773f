//! Markdown tables of a set of runs.

use std::fmt::Write;

use crate::Report;
use crate::overlay::Policy;

fn mean(values: impl IntoIterator<Item = f64>) -> f64 {
    let (sum, n) = values
        .into_iter()
        .fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    if n == 0 { 0.0 } else { sum / n as f64 }
}

/// The `q` quantile (0..=1) of `values`, nearest rank.
pub fn quantile(values: &[u32], q: f64) -> u32 {
    if values.is_empty() {
        return 0;
    }
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn percent(x: f64) -> String {
    if x >= 1.0 {
        "100 %".to_owned()
    } else {
        format!("{:.2} %", x * 100.0)
    }
}

fn churn(r: &Report) -> String {
    let rate = if r.config.churn == 0.0 {
        "none".to_owned()
    } else {
        format!("{} %", r.config.churn * 100.0)
    };
    if r.config.server_gone {
        format!("{rate}, no server (leave only)")
    } else {
        rate
    }
}

fn peers(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The overlay, gossip and lookup tables for these runs.
pub fn markdown(reports: &[Report]) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = write_tables(&mut out, reports);
    out
}

fn write_tables(out: &mut String, reports: &[Report]) -> std::fmt::Result {
    writeln!(out, "Overlay (per-round churn; worst round of the run):\n")?;
    writeln!(
        out,
        "| peers | welcome | churn/round | left / joined | live at end | degree min/mean/max (end) | largest component after departures, before repair | components then | largest component after repair | components then | server fallbacks/round | dials/peer/round | failed dials: refused / peer gone / beyond relay reach |"
    )?;
    writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|---|---|")?;
    for r in reports {
        let (min, mean_degree, max) = r.degrees;
        writeln!(
            out,
            "| {} | {} | {} | {} / {} | {} | {} / {:.1} / {} | {} | {} | {} | {} | {:.2} | {:.3} | {} / {} / {} |",
            peers(r.config.peers),
            if r.config.overlay.welcome == 0 {
                "whole room".to_owned()
            } else if r.config.overlay.policy == Policy::Mesh {
                format!(
                    "{}: closest per bucket, rest random",
                    r.config.overlay.welcome
                )
            } else {
                format!("{} random", r.config.overlay.welcome)
            },
            churn(r),
            peers(r.departures),
            peers(r.arrivals),
            peers(r.last.alive),
            min,
            mean_degree,
            max,
            percent(r.worst_after_departures),
            r.most_components_after_departures,
            percent(r.worst_after_repair),
            r.most_components_after_repair,
            r.server_fallbacks_per_round,
            r.dials_per_peer_round,
            peers(r.failed_dials.0 as usize),
            peers(r.failed_dials.1 as usize),
            peers(r.failed_dials.2 as usize),
        )?;
    }

    writeln!(
        out,
        "\nGossip (one announcement flooded with TTL {}):\n",
        reports.first().map_or(0, |r| r.config.ttl)
    )?;
    writeln!(
        out,
        "| peers | churn/round | floods | reach mean / min | floods reaching 100 % | hops to 99 % mean / max | hops to 100 % max | without TTL: hops from origin to farthest peer, max | messages per peer per flood |"
    )?;
    writeln!(out, "|---|---|---|---|---|---|---|---|---|")?;
    for r in reports {
        let f = &r.floods;
        let full = f.iter().filter(|x| x.hops_to_all.is_some()).count();
        let h99: Vec<u32> = f.iter().filter_map(|x| x.hops_to_99).collect();
        let hall = f
            .iter()
            .map(|x| x.hops_to_all)
            .try_fold(0u32, |m, h| h.map(|h| m.max(h)));
        let min_reach = f.iter().map(|x| x.reach()).fold(1.0, f64::min);
        let farthest = f
            .iter()
            .map(|x| x.eccentricity)
            .try_fold(0u32, |m, h| h.map(|h| m.max(h)));
        writeln!(
            out,
            "| {} | {} | {} | {} / {} | {} / {} | {:.1} / {} | {} | {} | {:.2} |",
            peers(r.config.peers),
            churn(r),
            f.len(),
            percent(mean(f.iter().map(|x| x.reach()))),
            percent(min_reach),
            full,
            f.len(),
            mean(h99.iter().map(|h| f64::from(*h))),
            h99.iter().max().copied().unwrap_or(0),
            hall.map_or("never".to_owned(), |h| h.to_string()),
            farthest.map_or("split".to_owned(), |h| h.to_string()),
            mean(f.iter().map(|x| x.messages as f64 / x.alive.max(1) as f64)),
        )?;
    }

    writeln!(
        out,
        "\nProvider lookups (Kademlia, k = {}, alpha = {}; one provider per content):\n",
        reports.first().map_or(0, |r| r.config.dht.k),
        reports.first().map_or(0, |r| r.config.dht.alpha),
    )?;
    writeln!(
        out,
        "| peers | churn/round | lookups | success | failed: record lost / missed | hops mean / p95 / max | RPC rounds mean / p95 | messages per lookup mean / p95 | timeouts per lookup | requests to overlay neighbours | flooding the request instead: messages | publications: true k closest reached |"
    )?;
    writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|---|")?;
    for r in reports {
        let flood_messages = mean(r.floods.iter().map(|x| x.messages as f64));
        writeln!(
            out,
            "| {} | {} | {} | {} | {} / {} | {:.2} / {} / {} | {:.2} / {} | {:.1} / {} | {:.2} | {} | {} | {} |",
            peers(r.config.peers),
            churn(r),
            r.lookups,
            percent(r.successes as f64 / r.lookups.max(1) as f64),
            r.records_lost,
            r.lookups - r.successes - r.records_lost,
            mean(r.hops.iter().map(|h| f64::from(*h))),
            quantile(&r.hops, 0.95),
            r.hops.iter().max().copied().unwrap_or(0),
            mean(r.rounds.iter().map(|h| f64::from(*h))),
            quantile(&r.rounds, 0.95),
            mean(r.messages.iter().map(|h| f64::from(*h))),
            quantile(&r.messages, 0.95),
            r.failures as f64 / r.lookups.max(1) as f64,
            percent(r.to_neighbours as f64 / r.queries.max(1) as f64),
            peers(flood_messages.round() as usize),
            percent(r.publish_accuracy),
        )?;
    }

    writeln!(
        out,
        "\nProvider lookups as the clients make them (`swarm_core::dht`: requests routed hop by hop over the overlay's links towards the key, answers back along the path; same lookups):\n"
    )?;
    writeln!(
        out,
        "| peers | churn/round | lookups | success | hops mean / p95 / max | messages per lookup mean / p95 | publication messages per peer per round |"
    )?;
    writeln!(out, "|---|---|---|---|---|---|---|")?;
    for r in reports {
        writeln!(
            out,
            "| {} | {} | {} | {} | {:.2} / {} / {} | {:.1} / {} | {:.2} |",
            peers(r.config.peers),
            churn(r),
            r.routed_lookups,
            percent(r.routed_successes as f64 / r.routed_lookups.max(1) as f64),
            mean(r.routed_hops.iter().map(|h| f64::from(*h))),
            quantile(&r.routed_hops, 0.95),
            r.routed_hops.iter().max().copied().unwrap_or(0),
            mean(r.routed_messages.iter().map(|h| f64::from(*h))),
            quantile(&r.routed_messages, 0.95),
            r.routed_publish_per_peer_round,
        )?;
    }

    writeln!(
        out,
        "\nUpkeep of the structured layer during churn, per live peer per round:\n"
    )?;
    writeln!(
        out,
        "| peers | churn/round | routing table size (end) | table upkeep messages (newcomer bootstrap lookups, pings) | publication messages (new contents, republishing) | publications | run time |"
    )?;
    writeln!(out, "|---|---|---|---|---|---|---|")?;
    for r in reports {
        writeln!(
            out,
            "| {} | {} | {:.0} | {:.2} | {:.2} | {} | {:.1} s |",
            peers(r.config.peers),
            churn(r),
            r.mean_table_size,
            r.upkeep_per_peer_round,
            r.publish_per_peer_round,
            r.publications,
            r.elapsed.as_secs_f64(),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_and_thousands() {
        assert_eq!(quantile(&[5, 1, 3, 2, 4], 0.95), 5);
        assert_eq!(quantile(&[5, 1, 3, 2, 4], 0.5), 3);
        assert_eq!(quantile(&[], 0.5), 0);
        assert_eq!(peers(10000), "10,000");
        assert_eq!(peers(999), "999");
        assert_eq!(peers(1000000), "1,000,000");
    }
}
