//! `kunlunctl leader` over `GET /v1/leader`: which manager instance leads (holds the lease and
//! runs jobs, shard HA and XA recovery), at which epoch, and what the asked instance is.

use serde_json::Value;

use crate::client::{CliError, Client};

/// Executes `leader` and returns what to print.
pub fn run(client: &Client, json_out: bool) -> Result<String, CliError> {
    let v = client.get(client.url("/v1/leader", &[])?)?;
    if json_out {
        return Ok(crate::output::json(&v) + "\n");
    }
    Ok(render(&v))
}

/// The text form (pure; unit-tested).
fn render(v: &Value) -> String {
    let s = |k: &str| match v.get(k) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "-".to_string(),
        Some(other) => other.to_string(),
    };
    let secs = |k: &str| {
        v.get(k)
            .and_then(Value::as_f64)
            .map_or("-".to_string(), |x| format!("{x:.1} s"))
    };
    let mut out = format!(
        "role:          {}\nthis instance: {}\nleader:        {}\nepoch:         {}\n",
        s("role"),
        s("this_instance"),
        s("leader"),
        s("epoch")
    );
    if v.get("lease_secs").is_some_and(|x| !x.is_null()) {
        out.push_str(&format!(
            "lease:         {} (renewed every {})\n",
            secs("lease_secs"),
            secs("renew_secs")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn leader_and_follower_views() {
        let t = render(&json!({
            "role": "follower", "this_instance": "127.0.0.1:8011/7-ab", "leader": "127.0.0.1:8010/6-cd",
            "epoch": 3, "lease_secs": 10.0, "renew_secs": 3.3333
        }));
        assert!(t.contains("role:          follower\n"), "{t}");
        assert!(t.contains("leader:        127.0.0.1:8010/6-cd\n"), "{t}");
        assert!(t.contains("epoch:         3\n"), "{t}");
        assert!(
            t.contains("lease:         10.0 s (renewed every 3.3 s)\n"),
            "{t}"
        );
        let t = render(
            &json!({"role": "standalone", "this_instance": null, "leader": null,
            "epoch": null, "lease_secs": null, "renew_secs": null}),
        );
        assert!(
            t.contains("leader:        -\n") && !t.contains("lease:"),
            "{t}"
        );
    }
}
