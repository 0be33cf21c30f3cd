//! A real headless Chromium driven over WebDriver: Debian's `chromium` and `chromium-driver`
//! (installed by `scripts/test.sh`), a `chromedriver` on a free loopback port in its own
//! process group (killed with the browsers it started when dropped), and a `fantoccini` client.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use fantoccini::{Client, ClientBuilder, Locator};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde_json::json;

/// How long the driver may take to answer its status (it answers in well under a second).
const DRIVER_START: Duration = Duration::from_secs(20);
/// How long an action is tried again on an element a live refresh keeps replacing.
const STALE_RETRY: Duration = Duration::from_secs(10);

/// A chromedriver and one browser session.
pub struct Browser {
    pub client: Client,
    driver: Child,
    /// The browser's profile dir (removed on drop).
    _profile: tempfile::TempDir,
    log: PathBuf,
    /// Where [`Browser::shot`] saves screenshots.
    pub shots: PathBuf,
}

impl Browser {
    /// Starts chromedriver and a headless browser of `width` x `height`; screenshots go to
    /// `shots` (created).
    pub async fn start(shots: &Path, width: u32, height: u32) -> Result<Browser> {
        std::fs::create_dir_all(shots)?;
        let driver_bin = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .ok_or_else(|| {
                anyhow!("no chromedriver: install Debian's chromium-driver (scripts/test.sh does)")
            })?;
        let port = crate::cli::free_port();
        let profile = tempfile::tempdir()?;
        let log = profile.path().join("chromedriver.log");
        let driver = Command::new(driver_bin)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {driver_bin}"))?;
        let mut b = BrowserGuard(Some(driver));
        let url = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        loop {
            if let Some(st) = b.0.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!(
                    "chromedriver exited at start ({st}): {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            let ok = reqwest::get(format!("{url}/status"))
                .await
                .map(|r| r.status().is_success())
                .unwrap_or(false);
            if ok {
                break;
            }
            if started.elapsed() > DRIVER_START {
                bail!("chromedriver did not answer on {url} within {DRIVER_START:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--no-first-run", "--disable-extensions", "--disable-background-networking",
                    "--disable-sync", "--disable-component-update",
                    format!("--window-size={width},{height}"),
                    format!("--user-data-dir={}", profile.path().join("chrome").display()),
                ],
            }),
        );
        let client = ClientBuilder::native()
            .capabilities(caps)
            .connect(&url)
            .await
            .map_err(|e| {
                anyhow!(
                    "no browser session: {e}; chromedriver log: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            })?;
        Ok(Browser {
            client,
            driver: b.0.take().expect("the driver"),
            _profile: profile,
            log,
            shots: shots.to_path_buf(),
        })
    }

    /// Saves a screenshot of the viewport as `<shots>/<name>.png`; returns its path.
    pub async fn shot(&self, name: &str) -> Result<PathBuf> {
        let png = self.client.screenshot().await?;
        let p = self.shots.join(format!("{name}.png"));
        std::fs::write(&p, png)?;
        Ok(p)
    }

    /// Waits up to `limit` for an element `css` whose text satisfies `pred`; returns the text.
    pub async fn wait_text(
        &self,
        css: &str,
        limit: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Result<String> {
        let start = Instant::now();
        let mut last = String::new();
        loop {
            if let Ok(e) = self.client.find(Locator::Css(css)).await {
                if let Ok(t) = e.text().await {
                    if pred(&t) {
                        return Ok(t);
                    }
                    last = t;
                }
            }
            if start.elapsed() > limit {
                bail!("{css}: no matching text within {limit:?} (last: {last:?})");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Finds the element `css` and clicks it; again when a live refresh replaced it between
    /// the two (a stale element), for up to `STALE_RETRY`.
    pub async fn click_css(&self, css: &str) -> Result<()> {
        let start = Instant::now();
        loop {
            let r = async { self.client.find(Locator::Css(css)).await?.click().await }.await;
            match r {
                Ok(()) => return Ok(()),
                Err(e) if start.elapsed() < STALE_RETRY => {
                    tracing::debug!(css, error = %e, "click again");
                }
                Err(e) => return Err(anyhow!("click {css}: {e}")),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Finds the element `css` and types `text` into it, like [`Browser::click_css`].
    pub async fn type_css(&self, css: &str, text: &str) -> Result<()> {
        let start = Instant::now();
        loop {
            let r = async {
                self.client
                    .find(Locator::Css(css))
                    .await?
                    .send_keys(text)
                    .await
            }
            .await;
            match r {
                Ok(()) => return Ok(()),
                Err(e) if start.elapsed() < STALE_RETRY => {
                    tracing::debug!(css, error = %e, "type again");
                }
                Err(e) => return Err(anyhow!("type into {css}: {e}")),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The driver's log (for a failure message).
    pub fn driver_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Ends the session (the browser exits), then the driver.
    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        stop(&mut self.driver);
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        stop(&mut self.driver);
    }
}

/// Kills the driver's process group (the browsers it started are in it, even after the driver
/// itself died: its group lives while it is not reaped) and reaps it.
fn stop(c: &mut Child) {
    if let Ok(pid) = i32::try_from(c.id()) {
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
    }
    let _ = c.wait();
}

/// The driver until the session is up (killed if starting fails).
struct BrowserGuard(Option<Child>);

impl Drop for BrowserGuard {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            stop(c);
        }
    }
}
