//! The GPUs of this machine, found once at start through the CUDA driver, which is loaded at run time.
//!
//! Ferry is built without CUDA: `cudarc` opens `libcuda.so.1` when first asked, and NVML
//! (`libnvidia-ml.so.1`) is opened the same way for the metrics. A machine without the NVIDIA driver runs
//! with GPUs off: [`inventory`] says why in one line, `KIND_GPU` models fail their load with that reason
//! and the fix, `KIND_AUTO` models run on the CPU, CUDA shared-memory registration fails with the reason,
//! and the GPU metric families are left out. One job per module:
//!
//! - `driver`: the CUDA driver calls (discovery, IPC handles, copies); the only module here with `unsafe`,
//!   its invariants written at its top.
//! - `devices`: [`DeviceSet`], the GPUs an instance group names, small enough to keep plans `Copy`.
//! - `nvml`: the per-GPU figures of the metrics endpoint.
//!
//! The pinned staging tensors and IO binding of GPU sessions live with the ONNX Runtime backend
//! (`crate::onnx`), since ONNX Runtime allocates them.

#![deny(unsafe_code)]

mod devices;
#[allow(unsafe_code)]
pub(crate) mod driver;
pub mod nvml;

use std::sync::OnceLock;

pub use devices::{DeviceSet, MAX_GPU_ID};

/// One CUDA device as the driver describes it at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuDevice {
    /// The CUDA ordinal (`gpus: [..]` in an instance group, `device_id` in CUDA shared memory).
    pub id: i32,
    /// The marketing name, e.g. `NVIDIA H200`.
    pub name: String,
    /// The UUID as NVML and `nvidia-smi` write it (`GPU-xxxxxxxx-...`), Triton's `gpu_uuid` label.
    pub uuid: String,
    /// Device memory in bytes.
    pub total_bytes: u64,
    /// Free device memory at start in bytes, when NVML could tell without creating a CUDA context.
    pub free_bytes: Option<u64>,
    /// Compute capability `(major, minor)`, e.g. `(9, 0)`.
    pub compute_capability: (i32, i32),
}

/// What start-up found: the usable GPUs, or why there are none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inventory {
    /// The GPUs, by ordinal.
    pub devices: Vec<GpuDevice>,
    /// Why GPUs are off (no driver, the driver failed to start, no device), when they are.
    pub unavailable: Option<String>,
}

impl Inventory {
    /// An inventory without GPUs, saying why.
    pub fn none(reason: impl Into<String>) -> Self {
        Inventory {
            devices: Vec::new(),
            unavailable: Some(reason.into()),
        }
    }

    /// The ordinals of every GPU, the set an instance group without `gpus` runs on.
    pub fn ids(&self) -> DeviceSet {
        self.devices
            .iter()
            .fold(DeviceSet::EMPTY, |set, d| set.with(d.id))
    }

    /// GPU `id`, when this machine has it.
    pub fn device(&self, id: i32) -> Option<&GpuDevice> {
        self.devices.iter().find(|d| d.id == id)
    }

    /// The start-up log line: every GPU with its memory and compute capability, or why there is none.
    pub fn summary(&self) -> String {
        if self.devices.is_empty() {
            return format!(
                "no GPU: {}",
                self.unavailable
                    .as_deref()
                    .unwrap_or("the CUDA driver reports no device")
            );
        }
        let gib = |bytes: u64| bytes as f64 / f64::from(1u32 << 30);
        let listed: Vec<String> = self
            .devices
            .iter()
            .map(|d| {
                let free = d
                    .free_bytes
                    .map_or(String::new(), |free| format!(", {:.1} GiB free", gib(free)));
                format!(
                    "GPU {}: {}, {:.1} GiB{free}, compute capability {}.{}",
                    d.id,
                    d.name,
                    gib(d.total_bytes),
                    d.compute_capability.0,
                    d.compute_capability.1
                )
            })
            .collect();
        format!("{} GPU(s): {}", self.devices.len(), listed.join("; "))
    }

    /// Why a `KIND_GPU` instance on `id` cannot run here, with the fix; `None` when GPU `id` exists.
    pub fn refusal(&self, id: i32) -> Option<String> {
        if self.device(id).is_some() {
            return None;
        }
        Some(match &self.unavailable {
            Some(reason) => format!(
                "instance_group KIND_GPU needs GPU {id}, but GPUs are off here ({reason}); install the NVIDIA \
                 driver and onnxruntime-gpu, or use KIND_CPU (or KIND_AUTO to fall back to the CPU)"
            ),
            None => format!(
                "instance_group KIND_GPU names GPU {id}, which this machine does not have (it has {}); list \
                 GPUs it has in 'gpus', or leave 'gpus' empty for all of them",
                self.ids()
            ),
        })
    }
}

/// This process's GPUs, discovered the first time anyone asks (start-up asks first, and logs the summary).
pub fn inventory() -> &'static Inventory {
    static INVENTORY: OnceLock<Inventory> = OnceLock::new();
    INVENTORY.get_or_init(discover)
}

/// Asks the driver for every device, and NVML for its free memory.
fn discover() -> Inventory {
    let found = match driver::Driver::get() {
        Ok(cuda) => cuda.devices(),
        Err(reason) => return Inventory::none(reason),
    };
    let mut devices = match found {
        Ok(devices) => devices,
        Err(reason) => return Inventory::none(reason),
    };
    if devices.is_empty() {
        return Inventory::none(
            "the CUDA driver is installed but reports no device (check CUDA_VISIBLE_DEVICES)",
        );
    }
    if let Some(sampler) = nvml::Sampler::get() {
        for device in &mut devices {
            device.free_bytes = sampler.free_bytes(&device.uuid);
        }
    }
    Inventory {
        devices,
        unavailable: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h200(id: i32) -> GpuDevice {
        GpuDevice {
            id,
            name: "NVIDIA H200".into(),
            uuid: format!("GPU-{id}"),
            total_bytes: 150_754_820_096,
            free_bytes: Some(150_000_000_000),
            compute_capability: (9, 0),
        }
    }

    #[test]
    fn the_summary_names_every_gpu_or_the_reason_there_is_none() {
        let two = Inventory {
            devices: vec![h200(0), h200(1)],
            unavailable: None,
        };
        assert_eq!(
            two.summary(),
            "2 GPU(s): GPU 0: NVIDIA H200, 140.4 GiB, 139.7 GiB free, compute capability 9.0; \
             GPU 1: NVIDIA H200, 140.4 GiB, 139.7 GiB free, compute capability 9.0"
        );
        assert_eq!(two.ids(), DeviceSet::EMPTY.with(0).with(1));
        let none = Inventory::none("the CUDA driver (libcuda.so.1) is not installed");
        assert_eq!(
            none.summary(),
            "no GPU: the CUDA driver (libcuda.so.1) is not installed"
        );
    }

    #[test]
    fn a_refusal_gives_the_reason_and_the_fix() {
        let none = Inventory::none("the CUDA driver (libcuda.so.1) is not installed");
        let refusal = none.refusal(0).expect("no GPU here");
        assert!(
            refusal.contains("libcuda.so.1")
                && refusal.contains("KIND_CPU")
                && refusal.contains("onnxruntime-gpu"),
            "{refusal}"
        );
        let one = Inventory {
            devices: vec![h200(0)],
            unavailable: None,
        };
        assert_eq!(one.refusal(0), None);
        let missing = one.refusal(3).expect("no GPU 3");
        assert!(missing.contains("GPU 3") && missing.contains("[0]"), "{missing}");
    }

    /// This machine (and CI) has no NVIDIA driver: discovery must say so instead of panicking.
    #[test]
    fn discovery_without_a_driver_says_why() {
        let found = inventory();
        if found.devices.is_empty() {
            let reason = found.unavailable.as_deref().expect("a reason");
            assert!(!reason.is_empty());
            assert!(found.summary().starts_with("no GPU: "));
        }
    }
}
