//! Per-GPU figures for the metrics endpoint, read through NVML (`libnvidia-ml.so.1`, opened at run time).
//!
//! The families carry Triton's names and units (`nv_gpu_utilization` 0 to 1, memory in bytes, power in
//! watts, energy in joules since the server started) and Triton's `gpu_uuid` label. Without NVML, or
//! without a GPU the CUDA driver shows, the families are left out altogether, as a Triton started with
//! `--allow-gpu-metrics=false` or on a machine without GPUs leaves them out.

use std::{
    collections::HashMap,
    fmt::Write as _,
    panic::{AssertUnwindSafe, catch_unwind},
    sync::{Mutex, OnceLock, PoisonError},
};

use nvml_wrapper::Nvml;

/// One GPU at one scrape.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuSample {
    /// NVML's UUID (`GPU-...`), Triton's `gpu_uuid` label.
    pub uuid: String,
    /// Busy fraction over NVML's last sample period, 0 to 1.
    pub utilization: f64,
    /// Device memory in bytes.
    pub memory_total_bytes: u64,
    /// Device memory in use, in bytes.
    pub memory_used_bytes: u64,
    /// Power draw in watts.
    pub power_usage_watts: f64,
    /// The enforced power limit in watts.
    pub power_limit_watts: f64,
    /// Energy used since the server first read it, in joules.
    pub energy_joules: f64,
}

/// NVML, opened once; absent when the library is not installed or does not start.
pub struct Sampler {
    nvml: Nvml,
    /// Energy counters (mJ) at the first reading, by UUID: the metric counts from there.
    energy_start: Mutex<HashMap<String, u64>>,
}

impl std::fmt::Debug for Sampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sampler").finish_non_exhaustive()
    }
}

impl Sampler {
    /// NVML, opened the first time anyone asks; `None` (and one log line) when it cannot be.
    pub fn get() -> Option<&'static Sampler> {
        static SAMPLER: OnceLock<Option<Sampler>> = OnceLock::new();
        SAMPLER
            .get_or_init(|| {
                // A broken library must not take the server down: NVML is only for figures.
                match catch_unwind(Nvml::init) {
                    Ok(Ok(nvml)) => Some(Sampler {
                        nvml,
                        energy_start: Mutex::default(),
                    }),
                    Ok(Err(error)) => {
                        tracing::debug!(%error, "NVML is not available; GPU metrics are off");
                        None
                    }
                    Err(_) => None,
                }
            })
            .as_ref()
    }

    /// Free memory of the GPU with CUDA UUID `uuid`, without creating a CUDA context.
    pub fn free_bytes(&self, uuid: &str) -> Option<u64> {
        let device = self.nvml.device_by_uuid(uuid).ok()?;
        device.memory_info().ok().map(|m| m.free)
    }

    /// Reads GPU `uuid`; a figure the GPU does not report (power on some boards) reads 0.
    fn sample(&self, uuid: &str) -> Option<GpuSample> {
        let device = self.nvml.device_by_uuid(uuid).ok()?;
        let memory = device.memory_info().ok()?;
        let energy_now = device.total_energy_consumption().unwrap_or(0);
        let energy_start = *self
            .energy_start
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(uuid.to_owned())
            .or_insert(energy_now);
        Some(GpuSample {
            uuid: uuid.to_owned(),
            utilization: device
                .utilization_rates()
                .map_or(0.0, |u| f64::from(u.gpu) / 100.0),
            memory_total_bytes: memory.total,
            memory_used_bytes: memory.used,
            power_usage_watts: device.power_usage().map_or(0.0, |mw| f64::from(mw) / 1000.0),
            power_limit_watts: device
                .enforced_power_limit()
                .map_or(0.0, |mw| f64::from(mw) / 1000.0),
            energy_joules: energy_now.saturating_sub(energy_start) as f64 / 1000.0,
        })
    }
}

/// Every GPU of the inventory that NVML can read now; empty without NVML or GPUs.
pub fn samples() -> Vec<GpuSample> {
    let inventory = super::inventory();
    if inventory.devices.is_empty() {
        return Vec::new();
    }
    let Some(sampler) = Sampler::get() else {
        return Vec::new();
    };
    inventory
        .devices
        .iter()
        .filter_map(|device| {
            catch_unwind(AssertUnwindSafe(|| sampler.sample(&device.uuid)))
                .ok()
                .flatten()
        })
        .collect()
}

/// Reads one figure of a GPU sample.
type Figure = fn(&GpuSample) -> f64;

/// Triton's GPU families: name, help, and the figure of a sample.
const FAMILIES: [(&str, &str, Figure); 6] = [
    ("nv_gpu_utilization", "GPU utilization rate [0.0 - 1.0)", |s| {
        s.utilization
    }),
    ("nv_gpu_memory_total_bytes", "GPU total memory, in bytes", |s| {
        s.memory_total_bytes as f64
    }),
    ("nv_gpu_memory_used_bytes", "GPU used memory, in bytes", |s| {
        s.memory_used_bytes as f64
    }),
    ("nv_gpu_power_usage", "GPU power usage in watts", |s| {
        s.power_usage_watts
    }),
    ("nv_gpu_power_limit", "GPU power management limit in watts", |s| {
        s.power_limit_watts
    }),
    (
        "nv_energy_consumption",
        "GPU energy consumption in joules since the Triton Server started",
        |s| s.energy_joules,
    ),
];

/// Writes the GPU families for `samples`; nothing at all when there is no sample.
pub fn render(out: &mut String, samples: &[GpuSample]) {
    if samples.is_empty() {
        return;
    }
    for (name, help, figure) in FAMILIES {
        crate::metrics::declare(out, name, help, "gauge");
        for sample in samples {
            let uuid = crate::metrics::escape_label(&sample.uuid);
            let _ = writeln!(out, "{name}{{gpu_uuid=\"{uuid}\"}} {}", figure(sample));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_samples_no_family_is_written() {
        let mut out = String::new();
        render(&mut out, &[]);
        assert_eq!(out, "");
    }

    /// Triton's names and units (`src/metrics.cc` of triton-inference-server/core: `nv_gpu_utilization`,
    /// `nv_gpu_memory_total_bytes`, `nv_gpu_memory_used_bytes`, `nv_gpu_power_usage`, `nv_gpu_power_limit`,
    /// `nv_energy_consumption`, each labelled `gpu_uuid`).
    #[test]
    fn each_gpu_family_has_one_series_per_gpu() {
        let sample = |uuid: &str| GpuSample {
            uuid: uuid.into(),
            utilization: 0.5,
            memory_total_bytes: 1024,
            memory_used_bytes: 512,
            power_usage_watts: 120.5,
            power_limit_watts: 700.0,
            energy_joules: 3.25,
        };
        let mut out = String::new();
        render(&mut out, &[sample("GPU-a"), sample("GPU-b")]);
        for (name, _, _) in FAMILIES {
            assert!(out.contains(&format!("# TYPE {name} gauge\n")), "{out}");
            assert_eq!(out.matches(&format!("\n{name}{{gpu_uuid=")).count(), 2, "{out}");
        }
        assert!(out.contains("nv_gpu_utilization{gpu_uuid=\"GPU-a\"} 0.5\n"));
        assert!(out.contains("nv_gpu_memory_used_bytes{gpu_uuid=\"GPU-b\"} 512\n"));
        assert!(out.contains("nv_gpu_power_limit{gpu_uuid=\"GPU-a\"} 700\n"));
        assert!(out.contains("nv_energy_consumption{gpu_uuid=\"GPU-b\"} 3.25\n"));
    }

    /// This machine (and CI) has neither GPU nor NVML: the scrape has no sample.
    #[test]
    fn no_gpu_means_no_sample() {
        if super::super::inventory().devices.is_empty() {
            assert!(samples().is_empty());
        }
    }
}
