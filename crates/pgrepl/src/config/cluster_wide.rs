//! pgrepl's own cluster-wide settings (`KEYS`): the ones kept in the spec, the same for every
//! member and router, and changed by `pgrepl config set` beside PostgreSQL's parameters
//! (PostgreSQL has no parameter of these names, so a name tells the two apart). A change is
//! read as the configuration reads it (each key's `SETTINGS` entry puts the text into a
//! `RawConfig`) and judged by the configuration's own checks, so it is refused with the same
//! one-line error naming the setting, the value and what is allowed. Pure: this module reads
//! and writes no store and no file.

use super::checks::{self, Sources};
use super::raw::RawConfig;
use super::settings::SETTINGS;
use super::validate::{Config, ConfigError};
use pgrepl_core::{FailoverSpec, MaxLag, RoFallback, Routing, Spec, SyncMode, Timing};
use std::collections::BTreeMap;
use std::time::Duration;

/// pgrepl's settings kept in the spec, by their keys in `pgrepl.toml`.
pub const KEYS: [&str; 9] = [
    "synchronous",
    "maximum_lag_on_failover",
    "ttl",
    "loop_wait",
    "primary_start_timeout",
    "ro_max_lag",
    "ro_fallback",
    "rw_wait",
    "allow",
];

/// Whether `name` is one of pgrepl's cluster-wide settings (else a PostgreSQL parameter).
pub fn is_key(name: &str) -> bool {
    KEYS.contains(&name)
}

/// pgrepl's cluster-wide settings, as the cluster runs with them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterWide {
    /// `synchronous` and `maximum_lag_on_failover` (`automatic` rides along unchanged).
    pub failover: FailoverSpec,
    pub timing: Timing,
    pub routing: Routing,
    pub allow: Vec<String>,
}

impl ClusterWide {
    /// This host's configuration's values.
    pub fn configured(config: &Config) -> ClusterWide {
        ClusterWide {
            failover: config.failover,
            timing: Timing {
                loop_wait: config.loop_wait,
                ttl: config.ttl,
                primary_start_timeout: config.primary_start_timeout,
            },
            routing: Routing {
                ro_max_lag: config.ro_max_lag,
                ro_fallback: config.ro_fallback,
                rw_wait: config.rw_wait,
            },
            allow: config.allow.clone(),
        }
    }

    /// What the cluster runs with: the spec's values, else (a spec from before they were kept
    /// there) this host's configuration's, as each agent and router then uses its own.
    pub fn of(spec: &Spec, config: &Config) -> ClusterWide {
        let own = ClusterWide::configured(config);
        ClusterWide {
            failover: spec.failover,
            timing: spec.timing_or(own.timing),
            routing: spec.routing_or(own.routing),
            allow: spec.allow_or(&own.allow).to_vec(),
        }
    }

    /// Whether the spec holds exactly these values (nothing to write).
    pub fn is_in(&self, spec: &Spec) -> bool {
        spec.failover == self.failover
            && spec.timing == Some(self.timing)
            && spec.routing == Some(self.routing)
            && spec.allow.as_ref() == Some(&self.allow)
    }

    /// Puts these values in the spec.
    pub fn put_in(&self, spec: &mut Spec) {
        spec.failover = self.failover;
        spec.timing = Some(self.timing);
        spec.routing = Some(self.routing);
        spec.allow = Some(self.allow.clone());
    }

    /// Each key's value as `pgrepl.toml` writes it (and `config show` prints it), which reads
    /// back as the same value.
    pub fn texts(&self) -> BTreeMap<String, String> {
        let f = &self.failover;
        let (t, r) = (&self.timing, &self.routing);
        let sync = match f.synchronous {
            SyncMode::Off => "off",
            SyncMode::On => "on",
            SyncMode::Quorum => "quorum",
        };
        let ro_max_lag = match r.ro_max_lag {
            MaxLag::Bytes(n) => bytes_text(n),
            MaxLag::Time(d) => duration_text(d),
        };
        let ro_fallback = match r.ro_fallback {
            RoFallback::Primary => "primary",
            RoFallback::Refuse => "refuse",
        };
        [
            ("synchronous", sync.to_string()),
            ("maximum_lag_on_failover", bytes_text(f.maximum_lag_bytes)),
            ("ttl", duration_text(t.ttl)),
            ("loop_wait", duration_text(t.loop_wait)),
            ("primary_start_timeout", duration_text(t.primary_start_timeout)),
            ("ro_max_lag", ro_max_lag),
            ("ro_fallback", ro_fallback.to_string()),
            ("rw_wait", duration_text(r.rw_wait)),
            ("allow", self.allow.join(",")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// The settings after `set` (key, text) and `reset` (keys, back to their defaults), judged
    /// together by the configuration's checks (`ttl` against the new `loop_wait`, say). Keys
    /// must be among `KEYS`.
    pub fn changed(&self, set: &[(String, String)], reset: &[String]) -> Result<ClusterWide, ConfigError> {
        let mut raw = RawConfig { automatic_failover: Some(self.failover.automatic), ..RawConfig::default() };
        for (key, text) in self.texts() {
            if !reset.contains(&key) {
                put(&mut raw, &key, &text)?;
            }
        }
        for (key, text) in set {
            put(&mut raw, key, text)?;
        }
        let src = Sources(&[]);
        let checks::Timing { loop_wait, ttl, primary_start_timeout, failover } = checks::timing(&raw, &src)?;
        let checks::Router { ro_max_lag, ro_fallback, rw_wait, .. } = checks::router(&raw, &src)?;
        let allow = checks::network(&raw, &src)?.allow;
        Ok(ClusterWide {
            failover,
            timing: Timing { loop_wait, ttl, primary_start_timeout },
            routing: Routing { ro_max_lag, ro_fallback, rw_wait },
            allow,
        })
    }

    /// The keys whose values differ between `self` and `other`.
    pub fn differing(&self, other: &ClusterWide) -> Vec<String> {
        let (a, b) = (self.texts(), other.texts());
        a.iter().filter(|(k, v)| b.get(*k) != Some(v)).map(|(k, _)| k.clone()).collect()
    }

    /// The raw configuration `raw` with the `keys` of `self` written into it (for the
    /// directory's `pgrepl.toml` to follow a change).
    pub fn write_into(&self, raw: &mut RawConfig, keys: &[String]) -> Result<(), ConfigError> {
        let texts = self.texts();
        for key in keys {
            if let Some(text) = texts.get(key) {
                put(raw, key, text)?;
            }
        }
        Ok(())
    }
}

/// How routers serve the cluster `spec` describes (`status` and `endpoints` show what they do):
/// the spec's routing, else this host's.
pub fn routing(spec: Option<&Spec>, config: &Config) -> Routing {
    let own = ClusterWide::configured(config).routing;
    spec.map_or(own, |spec| spec.routing_or(own))
}

/// The clocks the agents of the cluster `spec` describes run with: the spec's, else this host's.
pub fn timing(spec: Option<&Spec>, config: &Config) -> Timing {
    let own = ClusterWide::configured(config).timing;
    spec.map_or(own, |spec| spec.timing_or(own))
}

/// Puts a key's text into `raw` as its `SETTINGS` entry reads it from the environment.
fn put(raw: &mut RawConfig, key: &str, text: &str) -> Result<(), ConfigError> {
    let setting = SETTINGS.iter().find(|s| s.key == key && is_key(key)).ok_or_else(|| {
        super::validate::bad(key, format!("is not one of pgrepl's cluster-wide settings ({})", KEYS.join(", ")))
    })?;
    (setting.set)(raw, text).map_err(|problem| super::validate::bad(key, problem))
}

/// A duration as the configuration writes one (`500ms`, `4s`, `2m`, `1h`).
fn duration_text(d: Duration) -> String {
    let ms = d.as_millis();
    let s = d.as_secs();
    if !ms.is_multiple_of(1000) {
        format!("{ms}ms")
    } else if s != 0 && s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s != 0 && s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

/// A size as PostgreSQL writes one: the largest unit it is a whole number of (`16MB`, `7`).
fn bytes_text(n: u64) -> String {
    for (unit, shift) in [("TB", 40), ("GB", 30), ("MB", 20), ("kB", 10)] {
        if n != 0 && n.is_multiple_of(1u64 << shift) {
            return format!("{}{unit}", n >> shift);
        }
    }
    n.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> ClusterWide {
        ClusterWide::configured(&super::super::validate(&RawConfig::default(), &[]).unwrap())
    }

    fn set(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn every_key_is_a_setting_and_none_a_parameter_name_pgrepl_passes_on() {
        for key in KEYS {
            assert!(SETTINGS.iter().any(|s| s.key == key), "{key}");
        }
        assert!(is_key("ttl") && is_key("allow") && !is_key("work_mem") && !is_key("automatic_failover"));
    }

    #[test]
    fn the_texts_read_back_as_the_same_values() {
        let now = defaults();
        assert_eq!(now.changed(&[], &[]).unwrap(), now);
        let texts = now.texts();
        assert_eq!(texts["ttl"], "4s");
        assert_eq!(texts["ro_max_lag"], "16MB");
        assert_eq!(texts["maximum_lag_on_failover"], "1MB");
        assert_eq!(texts["allow"], "127.0.0.1/32,::1/128");
        let odd = now
            .changed(
                &set(&[
                    ("loop_wait", "1500ms"),
                    ("ttl", "2m"),
                    ("rw_wait", "0s"),
                    ("ro_max_lag", "10s"),
                    ("maximum_lag_on_failover", "1000"),
                ]),
                &[],
            )
            .unwrap();
        assert_eq!(odd.texts()["loop_wait"], "1500ms");
        assert_eq!(odd.texts()["ttl"], "2m");
        assert_eq!(odd.texts()["rw_wait"], "0s");
        assert_eq!(odd.texts()["ro_max_lag"], "10s");
        assert_eq!(odd.texts()["maximum_lag_on_failover"], "1000");
        assert_eq!(odd.changed(&[], &[]).unwrap(), odd);
    }

    #[test]
    fn a_change_takes_the_new_values_and_reset_the_defaults() {
        let now = defaults();
        let next = now
            .changed(
                &set(&[
                    ("synchronous", "on"),
                    ("ttl", "9s"),
                    ("loop_wait", "2s"),
                    ("ro_fallback", "refuse"),
                    ("allow", "10.0.0.0/8, 192.168.1.7"),
                ]),
                &[],
            )
            .unwrap();
        assert_eq!(next.failover.synchronous, SyncMode::On);
        assert_eq!(next.failover.automatic, now.failover.automatic);
        assert_eq!(next.timing.ttl, Duration::from_secs(9));
        assert_eq!(next.timing.loop_wait, Duration::from_secs(2));
        assert_eq!(next.routing.ro_fallback, RoFallback::Refuse);
        assert_eq!(next.allow, ["10.0.0.0/8", "192.168.1.7/32"]);
        let mut keys = now.differing(&next);
        keys.sort();
        assert_eq!(keys, ["allow", "loop_wait", "ro_fallback", "synchronous", "ttl"]);
        let back = next.changed(&[], &["ttl".into(), "loop_wait".into(), "allow".into()]).unwrap();
        assert_eq!(back.timing, now.timing);
        assert_eq!(back.allow, now.allow);
        assert_eq!(back.failover.synchronous, SyncMode::On);
    }

    #[test]
    fn a_bad_value_is_refused_naming_the_setting_the_value_and_what_is_allowed() {
        let now = defaults();
        let one_sec = now.changed(&set(&[("loop_wait", "1s")]), &[]).unwrap();
        for (pairs, setting, words) in [
            (vec![("ttl", "1s")], "ttl", "1s is too short for loop_wait 1s"),
            (vec![("loop_wait", "2s")], "ttl", "4s is too short for loop_wait 2s"),
            (vec![("synchronous", "maybe")], "synchronous", "\"maybe\" is not allowed; use off, on or quorum"),
            (vec![("ttl", "soon")], "ttl", "\"soon\" is not a duration"),
            (vec![("ro_max_lag", "lots")], "ro_max_lag", "\"lots\" is neither a size nor a duration"),
            (vec![("rw_wait", "1h")], "rw_wait", "\"1h\" is not allowed; use a duration from 0s to 10m"),
            (vec![("allow", "10.0.0.0/33")], "allow", "\"10.0.0.0/33\" is not an address range"),
            (vec![("maximum_lag_on_failover", "far")], "maximum_lag_on_failover", "\"far\" is not a size"),
        ] {
            let pairs: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            let e = one_sec.changed(&pairs, &[]).unwrap_err();
            assert_eq!(e.setting, setting, "{pairs:?}: {e}");
            assert!(e.problem.contains(words), "{pairs:?}: {e}");
        }
        // Together, a longer loop and a longer lease pass.
        now.changed(&set(&[("loop_wait", "2s"), ("ttl", "6s")]), &[]).unwrap();
    }

    #[test]
    fn the_spec_wins_and_an_old_spec_leaves_the_hosts_own() {
        let config = super::super::validate(&RawConfig::default(), &[]).unwrap();
        let own = ClusterWide::configured(&config);
        let old = Spec { failover: config.failover, ..Spec::default() };
        assert_eq!(ClusterWide::of(&old, &config), own);
        assert!(!own.is_in(&old));
        let next = own.changed(&set(&[("ttl", "8s")]), &[]).unwrap();
        let mut spec = old.clone();
        next.put_in(&mut spec);
        assert!(next.is_in(&spec));
        assert_eq!(ClusterWide::of(&spec, &config), next);
        let mut raw = RawConfig::default();
        next.write_into(&mut raw, &["ttl".into()]).unwrap();
        assert_eq!((raw.ttl.as_deref(), raw.loop_wait.as_deref()), (Some("8s"), None));
    }
}
