//! Health checks with Docker's semantics: the [`HealthCheck`] a task's `healthcheck` converts to
//! (CMD runs argv directly, CMD-SHELL runs `/bin/sh -c`, NONE or an empty test means none; zero
//! durations and retries mean the default), and the [`Monitor`] that turns check results into
//! the task's health: checks every `interval` (every `start_interval` during `start_period`),
//! failures inside the start period do not count (a pass ends it), and `retries` consecutive
//! failures make the task unhealthy.
//!
//! Must not: run commands or report statuses (the runner does both), or read a clock (times come
//! in as arguments).

use std::time::Duration;

use tokio::time::Instant;

use crate::model::HealthConfig;

use super::spec::SpecError;

/// Default time between checks (Docker's).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
/// Default time one check may run (Docker's).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default consecutive failures that make a task unhealthy (Docker's).
pub const DEFAULT_RETRIES: u64 = 3;
/// Default time between checks during the start period (Docker's).
pub const DEFAULT_START_INTERVAL: Duration = Duration::from_secs(5);

/// A task's health check, ready to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthCheck {
    /// The command: `CMD` arguments as given, or `/bin/sh -c <string>` for `CMD-SHELL`.
    pub argv: Vec<String>,
    /// Time between checks.
    pub interval: Duration,
    /// Time one check may run before it is killed and counted as failed.
    pub timeout: Duration,
    /// Consecutive failures that make the task unhealthy.
    pub retries: u64,
    /// Time after start during which failures do not count.
    pub start_period: Duration,
    /// Time between checks during the start period.
    pub start_interval: Duration,
}

/// The check a task's `healthcheck` asks for: `None` without one, for `NONE` or an empty test.
pub fn health_check(config: Option<&HealthConfig>) -> Result<Option<HealthCheck>, SpecError> {
    let Some(h) = config else { return Ok(None) };
    let invalid = || SpecError::InvalidHealthcheck {
        test: h.test.clone(),
    };
    let argv: Vec<String> = match h.test.first().map(String::as_str) {
        None | Some("NONE") => return Ok(None),
        Some("CMD") if h.test.len() > 1 => h.test[1..].to_vec(),
        Some("CMD-SHELL") if h.test.len() > 1 => {
            vec!["/bin/sh".into(), "-c".into(), h.test[1..].join(" ")]
        }
        _ => return Err(invalid()),
    };
    let or = |d: Option<Duration>, default: Duration| d.filter(|d| !d.is_zero()).unwrap_or(default);
    Ok(Some(HealthCheck {
        argv,
        interval: or(h.interval, DEFAULT_INTERVAL),
        timeout: or(h.timeout, DEFAULT_TIMEOUT),
        retries: h.retries.filter(|r| *r > 0).unwrap_or(DEFAULT_RETRIES),
        start_period: h.start_period.unwrap_or(Duration::ZERO),
        start_interval: or(h.start_interval, DEFAULT_START_INTERVAL),
    }))
}

/// What one check result changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The task just became healthy (its first pass).
    Healthy,
    /// Nothing to report.
    Unchanged,
    /// `retries` consecutive failures outside the start period.
    Unhealthy,
}

/// The health of one task, fed with check results.
#[derive(Clone, Debug)]
pub(crate) struct Monitor {
    check: HealthCheck,
    started: Instant,
    passed_once: bool,
    healthy: bool,
    failures: u64,
}

impl Monitor {
    /// A monitor for a task (re)started or adopted at `started`.
    pub(crate) fn new(check: HealthCheck, started: Instant) -> Self {
        Monitor {
            check,
            started,
            passed_once: false,
            healthy: false,
            failures: 0,
        }
    }

    pub(crate) fn check(&self) -> &HealthCheck {
        &self.check
    }

    /// Whether a check at `at` is still inside the start period (which a pass ends).
    fn in_start_period(&self, at: Instant) -> bool {
        !self.passed_once && at < self.started + self.check.start_period
    }

    /// How long to wait at `now` before the next check.
    pub(crate) fn next_delay(&self, now: Instant) -> Duration {
        if self.in_start_period(now) {
            self.check.start_interval
        } else {
            self.check.interval
        }
    }

    /// Records the result of a check started at `at`.
    pub(crate) fn record(&mut self, passed: bool, at: Instant) -> Verdict {
        if passed {
            self.failures = 0;
            self.passed_once = true;
            let became = !self.healthy;
            self.healthy = true;
            return if became {
                Verdict::Healthy
            } else {
                Verdict::Unchanged
            };
        }
        if self.in_start_period(at) {
            return Verdict::Unchanged;
        }
        self.failures += 1;
        if self.failures >= self.check.retries {
            self.healthy = false;
            Verdict::Unhealthy
        } else {
            Verdict::Unchanged
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(test: &[&str]) -> HealthConfig {
        HealthConfig {
            test: test.iter().map(|s| s.to_string()).collect(),
            ..HealthConfig::default()
        }
    }

    #[test]
    fn tests_convert_like_docker() {
        let cmd = health_check(Some(&config(&["CMD", "curl", "-f", "http://x"])))
            .expect("valid")
            .expect("a check");
        assert_eq!(cmd.argv, ["curl", "-f", "http://x"]);
        assert_eq!(
            (cmd.interval, cmd.timeout, cmd.retries),
            (DEFAULT_INTERVAL, DEFAULT_TIMEOUT, DEFAULT_RETRIES)
        );
        assert_eq!(
            (cmd.start_period, cmd.start_interval),
            (Duration::ZERO, DEFAULT_START_INTERVAL)
        );
        let shell = health_check(Some(&config(&["CMD-SHELL", "test -f /tmp/x"])))
            .expect("valid")
            .expect("a check");
        assert_eq!(shell.argv, ["/bin/sh", "-c", "test -f /tmp/x"]);
        assert_eq!(health_check(Some(&config(&["NONE"]))), Ok(None));
        assert_eq!(health_check(Some(&config(&[]))), Ok(None));
        assert_eq!(health_check(None), Ok(None));
        for bad in [&["CMD"][..], &["curl", "x"][..]] {
            assert!(health_check(Some(&config(bad))).is_err(), "{bad:?}");
        }
        let mut c = config(&["CMD", "true"]);
        c.interval = Some(Duration::from_secs(2));
        c.timeout = Some(Duration::ZERO);
        c.retries = Some(0);
        c.start_period = Some(Duration::from_secs(9));
        let h = health_check(Some(&c)).expect("valid").expect("a check");
        assert_eq!(
            (h.interval, h.timeout, h.retries, h.start_period),
            (
                Duration::from_secs(2),
                DEFAULT_TIMEOUT,
                DEFAULT_RETRIES,
                Duration::from_secs(9)
            )
        );
    }

    fn check(retries: u64, start_period: u64) -> HealthCheck {
        HealthCheck {
            argv: vec!["true".into()],
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(1),
            retries,
            start_period: Duration::from_secs(start_period),
            start_interval: Duration::from_secs(2),
        }
    }

    #[test]
    fn failures_count_only_after_the_start_period() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut m = Monitor::new(check(2, 30), t0);
        assert_eq!(m.next_delay(at(0)), Duration::from_secs(2));
        for s in [2, 4, 6, 28] {
            assert_eq!(m.record(false, at(s)), Verdict::Unchanged, "{s}");
        }
        assert_eq!(m.next_delay(at(30)), Duration::from_secs(10));
        assert_eq!(m.record(false, at(31)), Verdict::Unchanged);
        assert_eq!(m.record(false, at(41)), Verdict::Unhealthy);
    }

    #[test]
    fn a_pass_ends_the_start_period_and_resets_the_streak() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut m = Monitor::new(check(2, 60), t0);
        assert_eq!(m.record(true, at(2)), Verdict::Healthy);
        assert_eq!(m.next_delay(at(2)), Duration::from_secs(10));
        assert_eq!(m.record(false, at(12)), Verdict::Unchanged);
        assert_eq!(m.record(true, at(22)), Verdict::Unchanged, "still healthy");
        assert_eq!(m.record(false, at(32)), Verdict::Unchanged);
        assert_eq!(
            m.record(false, at(42)),
            Verdict::Unhealthy,
            "in the start period, after a pass"
        );
    }
}
