//! The instance keeper in `/metrics` (its state is part of `/v1/ha`, see `failovers.rs`).

/// The keeper's counters and gauges in the Prometheus text format (appended to `/metrics`
/// while it runs).
pub fn metrics_text(k: &kunlun_core::keeper::KeeperStatus) -> String {
    let mut out = String::new();
    let mut one = |name: &str, kind: &str, help: &str, v: u64| {
        out.push_str(&format!(
            "# HELP kunlun_cluster_mgr_{name} {help}\n# TYPE kunlun_cluster_mgr_{name} {kind}\nkunlun_cluster_mgr_{name} {v}\n"
        ));
    };
    let st = &k.stats;
    one(
        "keeper_rounds_total",
        "counter",
        "Rounds of the instance keeper",
        st.rounds,
    );
    one(
        "keeper_checks_total",
        "counter",
        "Machines the instance keeper checked over SSH",
        st.checks,
    );
    one(
        "keeper_check_failures_total",
        "counter",
        "Machine checks that failed (unreachable, timed out)",
        st.check_failures,
    );
    one(
        "keeper_found_down_total",
        "counter",
        "Instances found down (no live server process and the port closed), each time",
        st.found_down,
    );
    one(
        "keeper_restarts_total",
        "counter",
        "Restarts of dead instances the keeper began",
        st.restarts,
    );
    one(
        "keeper_restart_failures_total",
        "counter",
        "Restarts that failed (the server did not start, or did not replicate again)",
        st.restart_failures,
    );
    one(
        "keeper_crash_loops",
        "gauge",
        "Instances the keeper stopped restarting (down again after the restart limit), alarmed until seen up",
        st.crash_loops,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_counter_is_a_typed_sample() {
        let k = kunlun_core::keeper::KeeperShared::default().status();
        let text = metrics_text(&k);
        for name in [
            "keeper_restarts_total",
            "keeper_restart_failures_total",
            "keeper_crash_loops",
        ] {
            assert!(
                text.contains(&format!("# TYPE kunlun_cluster_mgr_{name} "))
                    && text.contains(&format!("\nkunlun_cluster_mgr_{name} 0\n")),
                "{name} in {text}"
            );
        }
    }
}
