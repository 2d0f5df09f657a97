//! Turns the pipeline's `device: auto|cpu|cuda:N` into a candle device.

use candle_core::Device;
use umdflow_stages::Gpu;

use crate::error::{ModelError, Result};

/// The one rule for a `device` parameter, used by every kind's plan-time check and by
/// [`select_device`]: `auto`, `cpu` or `cuda:N`. Returns what is wrong, or None.
pub fn spec_problem(spec: &str) -> Option<String> {
    match spec {
        "auto" | "cpu" => None,
        _ => match spec.strip_prefix("cuda:") {
            None => Some(format!(
                "expected `auto`, `cpu` or `cuda:N` (N a device number), got `{spec}`"
            )),
            Some(n) if n.parse::<usize>().is_err() => Some(format!(
                "the part after `cuda:` must be a device number such as 0, got `{spec}`"
            )),
            Some(_) => None,
        },
    }
}

/// The CUDA device `auto` tries, given the GPUs the run assigned (`StageContext::gpus`): the
/// first assigned one; none when the run manages GPUs and gave this instance none; device 0 when
/// the run manages no GPUs.
pub fn auto_ordinal(assigned: Option<&[Gpu]>) -> Option<usize> {
    match assigned {
        None => Some(0),
        Some(gpus) => gpus.first().map(|gpu| gpu.id),
    }
}

/// Selects the device named by `spec` (see [`spec_problem`]). `auto` picks the CUDA device of
/// [`auto_ordinal`] when this build has CUDA support and it answers, and the CPU otherwise; it
/// never panics. `cuda:N` opens device N (with `--gpus`, the scheduler reserved that one for it).
pub fn select_device(spec: &str, assigned: Option<&[Gpu]>) -> Result<Device> {
    if let Some(problem) = spec_problem(spec) {
        return Err(device_error(spec, &problem));
    }
    match spec {
        "cpu" => Ok(Device::Cpu),
        "auto" => Ok(auto_ordinal(assigned)
            .and_then(try_cuda)
            .unwrap_or(Device::Cpu)),
        _ => {
            let ordinal: usize = spec
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| device_error(spec, "expected `cuda:N`"))?;
            if !cfg!(feature = "cuda") {
                return Err(device_error(
                    spec,
                    "this build of umdflow has no CUDA support; rebuild with `--features cuda` \
                     or use `device: cpu` (or `auto`)",
                ));
            }
            try_cuda(ordinal).ok_or_else(|| {
                device_error(
                    spec,
                    &format!(
                        "CUDA device {ordinal} could not be opened (no driver or no such device)"
                    ),
                )
            })
        }
    }
}

fn device_error(spec: &str, message: &str) -> ModelError {
    ModelError::Device {
        spec: spec.to_string(),
        message: message.to_string(),
    }
}

/// Opens a CUDA device, or None. cudarc panics when the driver library is missing, so the
/// attempt runs under `catch_unwind` to turn that into "no device".
fn try_cuda(ordinal: usize) -> Option<Device> {
    if !cfg!(feature = "cuda") {
        return None;
    }
    let previous_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let opened = std::panic::catch_unwind(|| Device::new_cuda(ordinal));
    std::panic::set_hook(previous_hook);
    match opened {
        Ok(Ok(device)) => Some(device),
        _ => None,
    }
}

/// A short name for logs and metrics.
pub fn device_name(device: &Device) -> String {
    match device {
        Device::Cpu => "cpu".to_string(),
        Device::Cuda(_) => "cuda".to_string(),
        Device::Metal(_) => "metal".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_and_auto_work_and_bad_specs_are_explained() {
        assert!(select_device("cpu", None).unwrap().is_cpu());
        select_device("auto", None).unwrap();
        let err = select_device("gpu0", None).unwrap_err().to_string();
        assert!(err.contains("expected `auto`, `cpu` or `cuda:N`"), "{err}");
        let err = select_device("cuda:x", None).unwrap_err().to_string();
        assert!(err.contains("device number"), "{err}");
        // One rule: a bare `cuda` is refused here as at plan time.
        assert!(spec_problem("cuda").is_some());
        assert!(select_device("cuda", None).is_err());
        assert_eq!(spec_problem("cuda:1"), None);
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_on_a_cpu_build_is_a_clear_error() {
        let err = select_device("cuda:0", None).unwrap_err().to_string();
        assert!(err.contains("no CUDA support"), "{err}");
    }

    #[test]
    fn auto_takes_the_assigned_gpu_and_none_when_the_run_gave_none() {
        let gpu = |id: usize| Gpu {
            id,
            visible: id.to_string(),
        };
        assert_eq!(auto_ordinal(Some(&[gpu(3), gpu(1)])), Some(3));
        assert_eq!(auto_ordinal(Some(&[])), None);
        assert_eq!(auto_ordinal(None), Some(0));
        // Given no GPU by a run that manages them, `auto` stays off every GPU.
        assert!(select_device("auto", Some(&[])).unwrap().is_cpu());
    }
}
