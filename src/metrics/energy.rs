//! GPU power and energy over a window (a cell): mean and peak power draw, and the energy used,
//! from the devices' total-energy counters where every device has one, else from the trapezoid
//! integral of sampled power; then the derived joules per output token and per request. Pure
//! folds over readings, attributed over a list of devices like memory (docs/metrics.md,
//! "Power and energy").

use serde::{Deserialize, Serialize};

/// One device's power reading (NVML `power_usage`, `total_energy_consumption`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PowerReading {
    pub index: u32,
    /// Power draw in milliwatts; `None` where the device gives none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power_mw: Option<u32>,
    /// The device's total-energy counter in millijoules (since the driver loaded); `None` where
    /// the device has none (GPUs before Volta, some virtualised ones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub energy_mj: Option<u64>,
}

/// Where a window's energy figure comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnergySource {
    /// The increase of the devices' total-energy counters from the window's first sample to
    /// its last.
    Counter,
    /// The trapezoid integral of the sampled power draw over the window.
    PowerIntegral,
}

impl EnergySource {
    pub fn label(self) -> &'static str {
        match self {
            EnergySource::Counter => "energy counter",
            EnergySource::PowerIntegral => "integral of sampled power",
        }
    }
}

/// Power and energy of the attributed devices over one window (`energy` in a cell's
/// `resources`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Energy {
    /// The devices attributed to the window (their power is summed).
    pub devices: Vec<u32>,
    /// Samples in the window with a power reading from every attributed device.
    pub power_samples: u64,
    /// Seconds from the window's first sample to its last: what the energy is spent over.
    pub span_s: f64,
    /// Time-weighted mean of the summed sampled power (the integral over the span), watts; the
    /// one sample's power when the window has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power_mean_w: Option<f64>,
    /// Highest summed power of any sample, watts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power_peak_w: Option<f64>,
    /// Energy over the span, joules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub energy_j: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub energy_source: Option<EnergySource>,
    /// Energy per output token: the span's mean energy rate (`energy_j / span_s`) over the
    /// cell's output tokens/s. A rate over a rate, because the span also holds the warmup and
    /// the gaps between repeats, whose tokens are not counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub energy_j_per_output_token: Option<f64>,
    /// The same per successful request (over the cell's requests/s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub energy_j_per_request: Option<f64>,
    /// Why figures are missing, when some are (no power reading, no counter and too few
    /// samples, a counter that went backwards).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unavailable_reason: Option<String>,
}

/// The trapezoid integral of `(t_s, watts)` points in time order, joules.
pub fn trapezoid(points: &[(f64, f64)]) -> f64 {
    points
        .windows(2)
        .map(|p| (p[1].0 - p[0].0) * (p[0].1 + p[1].1) / 2.0)
        .sum()
}

/// Folds a window's samples, one at a time, over a set of devices.
#[derive(Debug, Clone, Default)]
pub struct EnergyFolder {
    /// The attributed devices; `None`: every device of the first sample.
    devices: Option<Vec<u32>>,
    samples: u64,
    first_t: Option<f64>,
    last_t: f64,
    /// Summed power of each sample that had every device's reading.
    power: Vec<(f64, f64)>,
    /// Counters at the first sample, and at the latest; `None` once a sample lacked one.
    counter_first: Option<Vec<u64>>,
    counter_last: Option<Vec<u64>>,
    counter_lost: bool,
}

impl EnergyFolder {
    /// A folder attributing the power of `devices` (NVML indices; `None`: every device read).
    pub fn new(devices: Option<Vec<u32>>) -> EnergyFolder {
        EnergyFolder {
            devices,
            ..EnergyFolder::default()
        }
    }

    /// Adds one sample taken `t_s` seconds after some fixed origin.
    pub fn add(&mut self, t_s: f64, readings: &[PowerReading]) {
        let devices = self
            .devices
            .get_or_insert_with(|| readings.iter().map(|r| r.index).collect())
            .clone();
        self.samples += 1;
        self.first_t.get_or_insert(t_s);
        self.last_t = t_s;
        let mine: Vec<&PowerReading> = devices
            .iter()
            .filter_map(|d| readings.iter().find(|r| r.index == *d))
            .collect();
        let whole = !devices.is_empty() && mine.len() == devices.len();
        let watts: Option<f64> = whole
            .then(|| {
                mine.iter()
                    .map(|r| r.power_mw.map(|mw| f64::from(mw) / 1000.0))
                    .sum::<Option<f64>>()
            })
            .flatten();
        if let Some(w) = watts {
            self.power.push((t_s, w));
        }
        let counters: Option<Vec<u64>> = whole
            .then(|| mine.iter().map(|r| r.energy_mj).collect())
            .flatten();
        match counters {
            Some(c) if !self.counter_lost => {
                if self.counter_first.is_none() {
                    self.counter_first = Some(c.clone());
                }
                self.counter_last = Some(c);
            }
            _ => self.counter_lost = true,
        }
    }

    /// The window's figures; `None` when it had no sample.
    pub fn finish(&self, power_error: Option<&str>) -> Option<Energy> {
        let first_t = self.first_t?;
        let span_s = self.last_t - first_t;
        let devices = self.devices.clone().unwrap_or_default();
        let mut reasons: Vec<String> = Vec::new();
        if devices.is_empty() {
            reasons.push("no GPU was sampled".into());
        }
        let integral = (self.power.len() >= 2).then(|| trapezoid(&self.power));
        let counter = match (&self.counter_first, &self.counter_last) {
            (Some(a), Some(b)) if !self.counter_lost && self.samples >= 2 => {
                if b.iter().zip(a).all(|(b, a)| b >= a) {
                    Some(b.iter().zip(a).map(|(b, a)| (b - a) as f64 / 1000.0).sum())
                } else {
                    reasons.push("the energy counter went backwards (driver reloaded?)".into());
                    None
                }
            }
            _ => None,
        };
        let (energy_j, energy_source) = match (counter, integral) {
            (Some(e), _) => (Some(e), Some(EnergySource::Counter)),
            (None, Some(e)) => (Some(e), Some(EnergySource::PowerIntegral)),
            (None, None) => (None, None),
        };
        if self.power.is_empty() && !devices.is_empty() {
            reasons.push(format!(
                "no power reading{}",
                power_error.map_or(String::new(), |e| format!(": {e}"))
            ));
        } else if (self.power.len() as u64) < self.samples {
            reasons.push(format!(
                "{} of {} samples had no power reading",
                self.samples - self.power.len() as u64,
                self.samples
            ));
        }
        if energy_j.is_none() && self.samples >= 2 && !self.power.is_empty() {
            reasons.push("no energy counter and fewer than two power samples".into());
        }
        let power_mean_w = match (integral, self.power.as_slice()) {
            (Some(e), _) if span_s > 0.0 && self.power.len() as u64 == self.samples => {
                Some(e / span_s)
            }
            (_, []) => None,
            (_, p) => Some(p.iter().map(|x| x.1).sum::<f64>() / p.len() as f64),
        };
        Some(Energy {
            devices,
            power_samples: self.power.len() as u64,
            span_s,
            power_mean_w,
            power_peak_w: self.power.iter().map(|p| p.1).reduce(f64::max),
            energy_j,
            energy_source,
            energy_j_per_output_token: None,
            energy_j_per_request: None,
            unavailable_reason: (!reasons.is_empty()).then(|| reasons.join("; ")),
        })
    }
}

/// The window's figures from a list of `(t_s, readings)` samples, attributed over `devices`.
pub fn fold(
    samples: &[(f64, Vec<PowerReading>)],
    devices: Option<Vec<u32>>,
    power_error: Option<&str>,
) -> Option<Energy> {
    let mut f = EnergyFolder::new(devices);
    for (t, r) in samples {
        f.add(*t, r);
    }
    f.finish(power_error)
}

impl Energy {
    /// Sets the per-token and per-request figures from the cell's rates: the span's mean energy
    /// rate (watts) over output tokens/s and over requests/s.
    pub fn derive(&mut self, output_tok_per_s: f64, request_per_s: f64) {
        let rate = match self.energy_j {
            Some(e) if self.span_s > 0.0 => Some(e / self.span_s),
            _ => None,
        };
        let per = |r: f64| rate.filter(|_| r > 0.0 && r.is_finite()).map(|w| w / r);
        self.energy_j_per_output_token = per(output_tok_per_s);
        self.energy_j_per_request = per(request_per_s);
    }
}

/// Dollars per million output tokens from energy: `usd_per_kwh` times the kWh of a million
/// tokens (`J/token x 10^6 / 3.6 x 10^6`).
pub fn usd_per_million_tokens_from_energy(j_per_token: f64, usd_per_kwh: f64) -> f64 {
    usd_per_kwh * j_per_token / 3.6
}

/// Dollars per million output tokens from time: the machine's hourly price over the tokens it
/// generates in an hour, times a million.
pub fn usd_per_million_tokens_from_time(output_tok_per_s: f64, usd_per_hour: f64) -> f64 {
    usd_per_hour / (output_tok_per_s * 3600.0) * 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(index: u32, w: Option<f64>, mj: Option<u64>) -> PowerReading {
        PowerReading {
            index,
            power_mw: w.map(|w| (w * 1000.0) as u32),
            energy_mj: mj,
        }
    }

    #[test]
    fn the_trapezoid_integral_is_exact_for_piecewise_linear_power() {
        assert_eq!(trapezoid(&[]), 0.0);
        assert_eq!(trapezoid(&[(1.0, 300.0)]), 0.0);
        // 300 W for 2 s, then a ramp to 500 W over 1 s: 600 + 400 J.
        assert_eq!(
            trapezoid(&[(0.0, 300.0), (2.0, 300.0), (3.0, 500.0)]),
            1000.0
        );
    }

    #[test]
    fn constant_power_without_a_counter_integrates_to_power_times_the_span() {
        let samples: Vec<_> = [0.5, 0.75, 1.25, 2.5]
            .iter()
            .map(|&t| (t, vec![r(0, Some(300.0), None)]))
            .collect();
        let e = fold(&samples, None, None).expect("figures");
        assert_eq!(e.span_s, 2.0);
        assert_eq!(e.energy_j, Some(600.0));
        assert_eq!(e.energy_source, Some(EnergySource::PowerIntegral));
        assert_eq!(e.power_mean_w, Some(300.0));
        assert_eq!(e.power_peak_w, Some(300.0));
        assert_eq!(e.power_samples, 4);
        assert_eq!(e.devices, vec![0]);
        assert_eq!(e.unavailable_reason, None);
    }

    #[test]
    fn the_counter_wins_over_the_integral_and_is_its_delta() {
        let samples = vec![
            (0.0, vec![r(0, Some(100.0), Some(10_000))]),
            (1.0, vec![r(0, Some(400.0), Some(10_250))]),
            (2.0, vec![r(0, Some(100.0), Some(10_700))]),
        ];
        let e = fold(&samples, None, None).expect("figures");
        assert_eq!(e.energy_source, Some(EnergySource::Counter));
        assert_eq!(e.energy_j, Some(0.7));
        // The mean is still the sampled power's (integral 500 J over 2 s), the peak its maximum.
        assert_eq!(e.power_mean_w, Some(250.0));
        assert_eq!(e.power_peak_w, Some(400.0));
    }

    #[test]
    fn a_counter_missing_in_any_sample_falls_back_to_the_integral() {
        let samples = vec![
            (0.0, vec![r(0, Some(200.0), Some(1_000))]),
            (1.0, vec![r(0, Some(200.0), None)]),
            (2.0, vec![r(0, Some(200.0), Some(900_000))]),
        ];
        let e = fold(&samples, None, None).expect("figures");
        assert_eq!(e.energy_source, Some(EnergySource::PowerIntegral));
        assert_eq!(e.energy_j, Some(400.0));
        let backwards = vec![
            (0.0, vec![r(0, Some(200.0), Some(5_000))]),
            (1.0, vec![r(0, Some(200.0), Some(4_000))]),
        ];
        let e = fold(&backwards, None, None).expect("figures");
        assert_eq!(e.energy_source, Some(EnergySource::PowerIntegral));
        assert_eq!(e.energy_j, Some(200.0));
        assert!(e
            .unavailable_reason
            .as_deref()
            .is_some_and(|w| w.contains("backwards")));
    }

    #[test]
    fn power_is_attributed_over_the_listed_devices_only() {
        let sample = |t: f64| {
            (
                t,
                vec![
                    r(0, Some(100.0), Some((t * 100_000.0) as u64)),
                    r(1, Some(200.0), Some((t * 200_000.0) as u64)),
                    r(2, Some(400.0), Some((t * 400_000.0) as u64)),
                ],
            )
        };
        let samples = vec![sample(0.0), sample(1.0), sample(3.0)];
        let all = fold(&samples, None, None).expect("figures");
        assert_eq!(all.devices, vec![0, 1, 2]);
        assert_eq!(all.power_peak_w, Some(700.0));
        assert_eq!(all.energy_j, Some(2100.0));
        let two = fold(&samples, Some(vec![1, 2]), None).expect("figures");
        assert_eq!(two.power_mean_w, Some(600.0));
        assert_eq!(two.energy_j, Some(1800.0));
        assert_eq!(two.energy_source, Some(EnergySource::Counter));
        let one = fold(&samples, Some(vec![0]), None).expect("figures");
        assert_eq!(one.energy_j, Some(300.0));
        // A device that gives no reading leaves its set without figures, not with a partial sum.
        let missing = fold(&samples, Some(vec![0, 7]), None).expect("figures");
        assert_eq!(missing.energy_j, None);
        assert_eq!(missing.power_mean_w, None);
    }

    #[test]
    fn no_power_reading_leaves_figures_absent_with_the_reason() {
        let samples = vec![(0.0, vec![r(0, None, None)]), (1.0, vec![r(0, None, None)])];
        let e = fold(&samples, None, Some("Not Supported")).expect("figures");
        assert_eq!(e.power_mean_w, None);
        assert_eq!(e.power_peak_w, None);
        assert_eq!(e.energy_j, None);
        let why = e.unavailable_reason.expect("a reason");
        assert!(why.contains("no power reading: Not Supported"), "{why}");
        // The counter alone still gives the energy.
        let samples = vec![
            (0.0, vec![r(0, None, Some(0))]),
            (2.0, vec![r(0, None, Some(500_000))]),
        ];
        let e = fold(&samples, None, None).expect("figures");
        assert_eq!(e.energy_j, Some(500.0));
        assert_eq!(e.energy_source, Some(EnergySource::Counter));
        assert_eq!(fold(&[], None, None), None);
    }

    #[test]
    fn one_sample_gives_its_power_and_no_energy() {
        let e = fold(&[(3.0, vec![r(0, Some(75.0), Some(9))])], None, None).expect("figures");
        assert_eq!(e.power_mean_w, Some(75.0));
        assert_eq!(e.energy_j, None);
        assert_eq!(e.unavailable_reason, None);
    }

    #[test]
    fn per_token_energy_is_the_energy_rate_over_the_token_rate() {
        let mut e = Energy {
            energy_j: Some(600.0),
            span_s: 2.0,
            ..Energy::default()
        };
        e.derive(150.0, 3.0);
        assert_eq!(e.energy_j_per_output_token, Some(2.0));
        assert_eq!(e.energy_j_per_request, Some(100.0));
        e.derive(0.0, 0.0);
        assert_eq!(e.energy_j_per_output_token, None);
        // 2 J per token at $0.10 per kWh: 2e6 J per million tokens = 0.556 kWh = $0.0556.
        let usd = usd_per_million_tokens_from_energy(2.0, 0.10);
        assert!((usd - 2.0e6 / 3.6e6 * 0.10).abs() < 1e-12, "{usd}");
        // $3.60 per hour at 1000 tok/s: 3.6e6 tokens per hour cost $3.60, a million $1.
        assert!((usd_per_million_tokens_from_time(1000.0, 3.6) - 1.0).abs() < 1e-12);
    }
}
