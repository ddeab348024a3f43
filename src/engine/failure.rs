//! Why an engine died, read from the tail of its log and its exit status: the causes worth a
//! name (CUDA out of memory, a KV cache too small, an NCCL error, a SIGKILL from the OOM killer).
//! A pure function of its inputs, so the patterns are pinned by unit tests on real log lines.

use serde::{Deserialize, Serialize};

/// A recognized cause of an engine's death.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureClass {
    /// An allocation on the GPU failed (`torch.OutOfMemoryError: CUDA out of memory`).
    CudaOutOfMemory,
    /// The engine could not fit the KV cache it needs (vLLM's "No available memory for the
    /// cache blocks", "larger than the available KV cache memory").
    KvCacheTooSmall,
    /// A collective failed or timed out (NCCL error, watchdog timeout).
    NcclError,
    /// The process was killed by signal 9: most often the kernel's OOM killer.
    #[serde(rename = "killed_by_signal_9")]
    KilledBySignal9,
}

impl FailureClass {
    /// The snake_case name, as written to the bundle.
    pub fn label(self) -> &'static str {
        match self {
            FailureClass::CudaOutOfMemory => "cuda_out_of_memory",
            FailureClass::KvCacheTooSmall => "kv_cache_too_small",
            FailureClass::NcclError => "nccl_error",
            FailureClass::KilledBySignal9 => "killed_by_signal_9",
        }
    }
}

/// Classifies an engine's death from its log tail and its exit status as Rust prints it
/// (`exit status: 1`, `signal: 9 (SIGKILL)`). The first cause in the order of the enum wins:
/// a CUDA OOM is the root cause of the NCCL errors and kills that often follow it on other
/// ranks. `None` when nothing is recognized.
pub fn classify(log_tail: &str, exit_status: Option<&str>) -> Option<FailureClass> {
    let lower = log_tail.to_ascii_lowercase();
    let has = |needles: &[&str]| needles.iter().any(|n| lower.contains(n));
    if has(&[
        "cuda out of memory",
        "outofmemoryerror",
        "cuda error: out of memory",
        "cudaerrormemoryallocation",
        "cublas_status_alloc_failed",
        "hip out of memory",
    ]) {
        return Some(FailureClass::CudaOutOfMemory);
    }
    if has(&[
        "no available memory for the cache blocks",
        "available kv cache memory",
        "can be stored in kv cache",
        "kv cache is needed",
        "insufficient kv cache",
        "not enough kv cache",
        "kv cache too small",
    ]) {
        return Some(FailureClass::KvCacheTooSmall);
    }
    if has(&[
        "nccl error",
        "ncclinternalerror",
        "ncclsystemerror",
        "ncclunhandledcudaerror",
        "ncclremoteerror",
        // The watchdog's timeout of a collective (`WorkNCCL(SeqNum=...)`); not
        // `ProcessGroupNCCL` alone, which a clean shutdown warns about too.
        "worknccl(",
    ]) {
        return Some(FailureClass::NcclError);
    }
    let killed_status = exit_status.is_some_and(|s| s.contains("signal: 9"));
    if killed_status
        || has(&[
            "out of memory: killed process",
            "oom-kill",
            "oom killer",
            "killed by signal 9",
            "died with signal 9",
            "signal 9 (sigkill)",
            "exitcode=-9",
            "exit code -9",
            "': -9}",
        ])
        || log_tail.lines().any(|l| l.trim() == "Killed")
    {
        return Some(FailureClass::KilledBySignal9);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuda_out_of_memory_from_torch_and_vllm() {
        for line in [
            "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.14 GiB of which 1.06 GiB is free. Including non-PyTorch memory, this process has 78.07 GiB memory in use.",
            "torch.cuda.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 MiB (GPU 0; 23.69 GiB total capacity; 22.51 GiB already allocated)",
            "RuntimeError: CUDA error: out of memory\nCUDA kernel errors might be asynchronously reported at some other API call",
            "(EngineCore_0 pid=4107) ERROR 06-12 10:31:02 [core.py:586] torch.OutOfMemoryError: CUDA out of memory.",
        ] {
            assert_eq!(
                classify(line, Some("exit status: 1")),
                Some(FailureClass::CudaOutOfMemory),
                "{line}"
            );
        }
    }

    #[test]
    fn kv_cache_too_small_from_vllm_v0_and_v1() {
        for line in [
            "ValueError: No available memory for the cache blocks. Try increasing `gpu_memory_utilization` when initializing the engine.",
            "ValueError: The model's max seq len (32768) is larger than the maximum number of tokens that can be stored in KV cache (12560). Try increasing `gpu_memory_utilization` or decreasing `max_model_len` when initializing the engine.",
            "ValueError: To serve at least one request with the models's max seq len (131072), (16.00 GiB KV cache is needed, which is larger than the available KV cache memory (9.29 GiB). Based on the available memory, the estimated maximum model length is 76096.",
        ] {
            assert_eq!(
                classify(line, Some("exit status: 1")),
                Some(FailureClass::KvCacheTooSmall),
                "{line}"
            );
        }
    }

    #[test]
    fn nccl_errors_and_watchdog_timeouts() {
        for line in [
            "torch.distributed.DistBackendError: NCCL error in: ../torch/csrc/distributed/c10d/NCCLUtils.hpp:275, unhandled system error (run with NCCL_DEBUG=INFO for details), NCCL version 2.20.5",
            "[rank1]:[E612 10:31:02.123456 ProcessGroupNCCL.cpp:616] [Rank 1] Watchdog caught collective operation timeout: WorkNCCL(SeqNum=12, OpType=ALLREDUCE, NumelIn=1, NumelOut=1, Timeout(ms)=600000) ran for 600030 milliseconds before timing out.",
            "RuntimeError: NCCL Error 2: unhandled system error",
        ] {
            assert_eq!(
                classify(line, Some("exit status: 1")),
                Some(FailureClass::NcclError),
                "{line}"
            );
        }
    }

    #[test]
    fn killed_by_signal_9_from_the_status_or_the_log() {
        assert_eq!(
            classify("INFO: loading weights", Some("signal: 9 (SIGKILL)")),
            Some(FailureClass::KilledBySignal9)
        );
        for line in [
            "Out of memory: Killed process 41234 (python3) total-vm:98765432kB, anon-rss:65432100kB",
            "RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {'EngineCore_0': -9}",
            "./serve.sh: line 3:  4107 Killed                  vllm serve m\nKilled",
            "Worker VllmWorkerProcess pid 4242 died, exit code: -9\nexitcode=-9",
        ] {
            assert_eq!(
                classify(line, Some("exit status: 137")),
                Some(FailureClass::KilledBySignal9),
                "{line}"
            );
        }
    }

    #[test]
    fn the_root_cause_wins_over_what_follows_it() {
        let tail = "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 1.00 GiB\n\
                    [rank0]: NCCL error in: ProcessGroupNCCL.cpp:1970, unhandled cuda error\n\
                    Failed core proc(s): {'EngineCore_0': -9}";
        assert_eq!(
            classify(tail, Some("signal: 9 (SIGKILL)")),
            Some(FailureClass::CudaOutOfMemory)
        );
    }

    #[test]
    fn the_bundle_spells_each_class_as_its_label() {
        for k in [
            FailureClass::CudaOutOfMemory,
            FailureClass::KvCacheTooSmall,
            FailureClass::NcclError,
            FailureClass::KilledBySignal9,
        ] {
            assert_eq!(crate::bundle::format::label(&k), k.label());
        }
    }

    #[test]
    fn an_unrecognized_death_has_no_class() {
        assert_eq!(
            classify(
                "Traceback (most recent call last):\nKeyError: 'model.layers.0.weight'\nKilled the prefix cache: disabled",
                Some("exit status: 1")
            ),
            None
        );
        assert_eq!(classify("", None), None);
    }
}
