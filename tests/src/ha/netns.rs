//! A private network namespace joined to this one by a veth pair (a /30 of 192.168.x.y used
//! only on that pair), so a test can run a server "on another host" and cut its link.
//!
//! Invariants: the namespace, its link and every process still inside it are removed when the
//! [`Netns`] is dropped (processes by PID, as `ip netns pids` lists them); traffic only ever
//! flows between this namespace and the one the test created.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{bail, Context, Result};

/// A namespace with one veth link to the current namespace.
#[derive(Debug)]
pub struct Netns {
    pub name: String,
    /// The link's end in this namespace.
    pub host_if: String,
    /// Address of this namespace's end.
    pub host_ip: String,
    /// Address inside the namespace (bind servers to it).
    pub ns_ip: String,
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .with_context(|| format!("running ip {args:?}"))?;
    if !out.status.success() {
        bail!(
            "ip {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl Netns {
    /// Creates `klns<pid>_<n>` with its link up and addressed.
    pub fn create() -> Result<Netns> {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let tag = format!("{}{}", pid % 100_000, n % 100);
        // A /30 per namespace: 192.168.<100..199>.<4k+1, 4k+2>.
        let octet = 100 + (pid % 100);
        let base = 4 * (n % 63);
        let ns = Netns {
            name: format!("klns{tag}"),
            host_if: format!("klh{tag}"),
            host_ip: format!("192.168.{octet}.{}", base + 1),
            ns_ip: format!("192.168.{octet}.{}", base + 2),
        };
        let peer = format!("kln{tag}");
        ip(&["netns", "add", &ns.name])?;
        // From here on Drop cleans up whatever was made.
        ip(&[
            "link",
            "add",
            &ns.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &peer,
        ])?;
        ip(&["link", "set", &peer, "netns", &ns.name])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/30", ns.host_ip),
            "dev",
            &ns.host_if,
        ])?;
        ip(&["link", "set", &ns.host_if, "up"])?;
        let inside = |a: &[&str]| {
            let mut v = vec!["netns", "exec", ns.name.as_str(), "ip"];
            v.extend_from_slice(a);
            ip(&v)
        };
        inside(&["link", "set", "lo", "up"])?;
        inside(&["addr", "add", &format!("{}/30", ns.ns_ip), "dev", &peer])?;
        inside(&["link", "set", &peer, "up"])?;
        Ok(ns)
    }

    /// Cuts the link (both directions; connections hang as on a real partition).
    pub fn cut(&self) -> Result<()> {
        ip(&["link", "set", &self.host_if, "down"])
    }

    /// Restores the link.
    pub fn restore(&self) -> Result<()> {
        ip(&["link", "set", &self.host_if, "up"])
    }

    /// PIDs of processes inside the namespace.
    pub fn pids(&self) -> Vec<u32> {
        Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for pid in self.pids() {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
        let _ = ip(&["link", "del", &self.host_if]);
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            eprintln!("netns cleanup: {e}");
        }
    }
}
