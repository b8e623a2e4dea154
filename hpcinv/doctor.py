"""Preflight: can this node run hpcinv's GPU paths? (``hpcinv doctor``; also at the start of GPU work.)

One finding per line, ``ok`` / ``warn`` / ``fail``:

* torch's build (CUDA version, or a CPU build) and the GPUs it sees;
* the CUDA driver (``cuDriverGetVersion`` from ``libcuda``) and, when readable, the NVIDIA driver release;
* deepwave's CUDA kernels: the machine code (``sm_XY`` cubins) and PTX its library ships, read from the
  fat binaries embedded in ``libdeepwave_C.so``. A GPU runs a cubin built for its major version and a
  minor version no higher than its own; otherwise the driver must JIT-compile the PTX, which needs a
  driver that knows that PTX ISA version (ISA 8.4 needs a CUDA 12.4 driver, R550 or newer) -- with an
  older driver every modelling call on that GPU fails;
* NCCL (multi-GPU DDP), and free / total memory per GPU.

With ``probe=True`` each GPU also runs a one-shot deepwave model: the definitive check.
"""

from __future__ import annotations

import ctypes
import mmap
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

FATBIN_MAGIC = 0xBA55ED50


@dataclass(frozen=True)
class Finding:
    level: str  # ok | warn | fail
    text: str

    def __str__(self) -> str:
        return f"{self.level:<4} {self.text}"


def kernel_targets(library: str | Path) -> dict:
    """``{"sm": sorted cubin architectures, "ptx": sorted (arch, "major.minor" ISA)}`` of a CUDA library,
    from the fat-binary headers (magic 0xBA55ED50) embedded in it."""
    sm, ptx = set(), set()
    with open(library, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
        magic, pos = struct.pack("<I", FATBIN_MAGIC), 0
        while (start := data.find(magic, pos)) >= 0 and start + 16 <= len(data):
            _, header_size, size = struct.unpack_from("<HHQ", data, start + 4)
            if header_size != 16 or start + header_size + size > len(data):
                pos = start + 4
                continue
            entry, end = start + header_size, start + header_size + size
            while entry + 32 <= end:
                kind, _, entry_header, entry_size = struct.unpack_from("<HHIQ", data, entry)
                _, _, minor, major, arch = struct.unpack_from("<IIHHI", data, entry + 16)
                if kind == 2:
                    sm.add(arch)
                elif kind == 1:
                    ptx.add((arch, f"{major}.{minor}"))
                if entry_header == 0:
                    break
                entry += entry_header + entry_size
            pos = end
    return {"sm": sorted(sm), "ptx": sorted(ptx)}


def deepwave_library() -> Path | None:
    import deepwave

    found = sorted(Path(deepwave.__file__).parent.glob("libdeepwave_C*.so"))
    return found[0] if found else None


def cuda_driver_version() -> int | None:
    """The CUDA version the installed driver supports, as 1000 * major + 10 * minor (12040 = 12.4)."""
    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    version = ctypes.c_int(0)
    return version.value if lib.cuDriverGetVersion(ctypes.byref(version)) == 0 else None


def nvidia_driver_release() -> str | None:
    try:
        text = Path("/proc/driver/nvidia/version").read_text()
    except OSError:
        return None
    for word in text.split():
        if word.count(".") >= 1 and word.replace(".", "").isdigit():
            return word
    return None


# the CUDA release that introduced each PTX ISA version (ISA 8.6 skipped CUDA 12.6, so the list is not linear)
PTX_ISA_CUDA = {
    "7.0": 11000, "7.1": 11010, "7.2": 11020, "7.3": 11030, "7.4": 11040, "7.5": 11050, "7.6": 11060,
    "7.7": 11070, "7.8": 11080, "8.0": 12000, "8.1": 12010, "8.2": 12020, "8.3": 12030, "8.4": 12040,
    "8.5": 12050, "8.6": 12070, "8.7": 12080, "8.8": 12090, "9.0": 13000,
}  # fmt: skip


def ptx_needs_driver(isa: str) -> int:
    """The CUDA driver version (1000 * major + 10 * minor) that JIT-compiles PTX ISA ``isa``. An ISA outside
    the table is taken as CUDA (major + 4).minor: ISA 9.1 as CUDA 13.1, as far as the pattern held."""
    if isa in PTX_ISA_CUDA:
        return PTX_ISA_CUDA[isa]
    major, minor = (int(p) for p in isa.split("."))
    return 1000 * (major + 4) + 10 * minor


def runs_on(capability: tuple[int, int], targets: dict, driver: int | None) -> tuple[bool, str]:
    """Whether kernels with ``targets`` run on a GPU of compute ``capability``, and how."""
    cc = 10 * capability[0] + capability[1]
    native = [a for a in targets["sm"] if a // 10 == capability[0] and a % 10 <= capability[1]]
    if native:
        return True, f"machine code for sm_{max(native)}"
    usable = [(a, isa) for a, isa in targets["ptx"] if a <= cc]
    if not usable:
        return False, (
            f"no machine code for sm_{cc} (shipped: {', '.join(f'sm_{a}' for a in targets['sm'])}) "
            "and no PTX it can compile"
        )
    arch, isa = max(usable)
    need = ptx_needs_driver(isa)
    if driver is None:
        return False, f"needs the driver to JIT-compile PTX ISA {isa}, and no CUDA driver was found"
    if driver < need:
        return False, (
            f"needs the driver to JIT-compile PTX ISA {isa} (a CUDA {need // 1000}.{need % 1000 // 10} "
            f"driver or newer), this driver supports CUDA {driver // 1000}.{driver % 1000 // 10}: "
            "every modelling call would fail; update the NVIDIA driver to one for that CUDA version or newer"
        )
    return True, f"PTX ISA {isa} JIT-compiled by the driver at first use (no sm_{cc} machine code shipped)"


def probe_deepwave(device: torch.device) -> float:
    """Seconds for a one-shot 32 x 32 deepwave model on ``device`` (first call: includes any JIT)."""
    import time

    import deepwave

    t0 = time.perf_counter()
    v = torch.full((32, 32), 2000.0, device=device)
    src = torch.tensor([[[1, 16]]], device=device)
    wavelet = deepwave.wavelets.ricker(10.0, 100, 0.001, 0.1).reshape(1, 1, -1).to(device)
    out = deepwave.scalar(
        v, 10.0, 0.001, source_amplitudes=wavelet, source_locations=src, receiver_locations=src, max_vel=2000.0
    )
    if not torch.isfinite(out[-1]).all():
        raise RuntimeError("non-finite receiver data")
    torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def findings(
    gpu: bool = False, probe: bool = False, devices: Sequence[int] | None = None, deepwave: bool = True
) -> list[Finding]:
    """Everything hpcinv needs for GPU work, checked; ``gpu``: a GPU job is meant to run here (a missing
    GPU or CUDA build is a failure, not a warning).

    ``devices``: the GPU indices to examine (default: every visible one). Reading a GPU's free memory
    creates a CUDA context on it (≈ 0.5 GiB, and refused on a GPU in exclusive-process mode that another
    process holds), so a training rank examines only its own GPU. ``deepwave``: judge deepwave's kernels
    on those GPUs (modelling and refinement need them; training does not); ``probe`` also runs a one-shot
    deepwave model on each, the definitive check.
    """
    import deepwave as deepwave_module

    missing = "fail" if gpu else "warn"
    out = [Finding("ok", f"torch {torch.__version__}, deepwave {deepwave_module.__version__}")]
    if torch.version.cuda is None:
        out.append(Finding(missing, "torch is a CPU build: no GPU work possible (install the CUDA build: docs/GPU.md)"))
        return out
    out.append(Finding("ok", f"torch built with CUDA {torch.version.cuda}"))
    driver, release = cuda_driver_version(), nvidia_driver_release()
    if driver is None:
        out.append(Finding(missing, "no CUDA driver (libcuda.so.1 not loadable)"))
        return out
    out.append(
        Finding(
            "ok",
            f"CUDA driver supports CUDA {driver // 1000}.{driver % 1000 // 10}"
            + (f" (NVIDIA driver {release})" if release else ""),
        )
    )
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        out.append(Finding(missing, "no usable CUDA GPU visible (CUDA_VISIBLE_DEVICES, the allocation's --gpus)"))
        return out
    devices = range(count) if devices is None else devices
    bad = [k for k in devices if not 0 <= k < count]
    if bad:
        out.append(Finding("fail", f"GPU index {bad[0]} asked for, but {count} GPU(s) are visible: 0..{count - 1}"))
        return out
    targets: dict = {"sm": [], "ptx": []}
    if deepwave:
        library = deepwave_library()
        targets = kernel_targets(library) if library else targets
        out.append(
            Finding(
                "ok" if targets["sm"] or targets["ptx"] else "fail",
                f"deepwave kernels: {', '.join(f'sm_{a}' for a in targets['sm']) or 'no machine code'}; "
                f"PTX {', '.join(f'compute_{a} ISA {isa}' for a, isa in targets['ptx']) or 'none'}",
            )
        )
    for k in devices:
        props = torch.cuda.get_device_properties(k)
        free, total = torch.cuda.mem_get_info(k)
        text = (
            f"cuda:{k} {props.name}, compute {props.major}.{props.minor}, {free / 2**30:.1f} of "
            f"{total / 2**30:.1f} GiB free"
        )
        if not deepwave:
            out.append(Finding("ok", text))
            continue
        ok, how = runs_on((props.major, props.minor), targets, driver)
        out.append(Finding("ok" if ok else "fail", f"{text}: deepwave {how}"))
        if ok and probe:
            try:
                seconds = probe_deepwave(torch.device("cuda", k))
                out.append(Finding("ok", f"cuda:{k} deepwave probe ran in {seconds:.2f} s"))
            except Exception as exc:  # the probe is the definitive check: report whatever it raised
                out.append(Finding("fail", f"cuda:{k} deepwave probe failed: {' '.join(str(exc).split())[:300]}"))
    nccl = torch.distributed.is_available() and torch.distributed.is_nccl_available()
    version = ".".join(map(str, torch.cuda.nccl.version())) if nccl else None
    out.append(
        Finding(
            "ok" if nccl else ("fail" if gpu and count > 1 else "warn"),
            f"NCCL {version} available for multi-GPU DDP" if nccl else "NCCL not available: no multi-GPU DDP",
        )
    )
    return out


def require_gpu_ready(
    where: str, device: torch.device | None = None, *, deepwave: bool = True, probe: bool = False
) -> None:
    """Raise one clear error naming every failed finding before GPU work starts on ``device`` (default:
    the current CUDA device); ``deepwave`` and ``probe`` as in :func:`findings`."""
    from hpcinv.errors import HpcinvError

    index = None
    if torch.cuda.is_available():
        index = torch.cuda.current_device() if device is None or device.index is None else device.index
    found = findings(gpu=True, probe=probe, devices=None if index is None else [index], deepwave=deepwave)
    failed = [f.text for f in found if f.level == "fail"]
    if failed:
        raise HpcinvError(f"{where} needs a working GPU, but: " + "; ".join(failed) + " (`hpcinv doctor --gpu`)")
