"""The GPU preflight: what deepwave's library can run on, read from its fat binaries, against GPUs and drivers."""

import struct

import deepwave
import pytest
import torch

from hpcinv.doctor import FATBIN_MAGIC, deepwave_library, kernel_targets, ptx_needs_driver, runs_on
from tests.conftest import run_cli


def _fatbin(entries) -> bytes:
    """A fat binary as nvcc embeds it: 16-byte header, then per entry a 64-byte header and its payload."""
    body = b""
    for kind, arch, major, minor, payload in entries:
        header = struct.pack("<HHIQIIHHI", kind, 0x0101, 64, len(payload), 0, 0, minor, major, arch)
        body += header.ljust(64, b"\0") + payload
    return struct.pack("<IHHQ", FATBIN_MAGIC, 1, 16, len(body)) + body


def test_kernel_targets_reads_cubins_and_ptx(tmp_path):
    lib = tmp_path / "lib.so"
    lib.write_bytes(
        b"\x7fELF junk"
        + _fatbin([(2, 80, 1, 7, b"x" * 100), (1, 70, 8, 5, b"ptx text")])
        + b"more"
        + _fatbin([(2, 90, 1, 7, b"y" * 10)])
        + struct.pack("<I", FATBIN_MAGIC)
        + b"cut"
    )
    assert kernel_targets(lib) == {"sm": [80, 90], "ptx": [(70, "8.5")]}


@pytest.mark.skipif(deepwave.__version__ != "0.1.0", reason="the figures below are deepwave 0.1.0's")
def test_deepwave_ships_sm86_sm89_and_ptx_8_4():
    assert kernel_targets(deepwave_library()) == {"sm": [86, 89], "ptx": [(50, "8.4")]}


@pytest.mark.parametrize(
    ("capability", "driver", "ok", "how"),
    [
        ((8, 6), 12020, True, "machine code for sm_86"),
        ((8, 7), 12020, True, "machine code for sm_86"),  # same major, higher minor: binary compatible
        ((8, 9), None, True, "machine code for sm_89"),
        ((9, 0), 12040, True, "PTX ISA 8.4 JIT-compiled"),  # H100 on a CUDA 12.4 driver
        ((9, 0), 12020, False, "a CUDA 12.4 driver or newer), this driver supports CUDA 12.2"),
        ((8, 0), None, False, "no CUDA driver was found"),
        ((3, 5), 12080, False, "no machine code for sm_35"),  # older than the PTX target
    ],
)
def test_runs_on(capability, driver, ok, how):
    got_ok, got_how = runs_on(capability, {"sm": [86, 89], "ptx": [(50, "8.4")]}, driver)
    assert got_ok is ok and how in got_how


@pytest.mark.parametrize(
    ("isa", "cuda"),
    [("7.8", 11080), ("8.4", 12040), ("8.5", 12050), ("8.6", 12070), ("8.8", 12090), ("9.0", 13000), ("9.1", 13010)],
)
def test_the_driver_a_ptx_isa_needs(isa, cuda):
    assert ptx_needs_driver(isa) == cuda  # ISA 8.6 came with CUDA 12.7: there was no new ISA in 12.6


@pytest.mark.slow
@pytest.mark.skipif(torch.version.cuda is not None, reason="this torch is a CUDA build")
def test_doctor_on_a_cpu_build():
    proc = run_cli("doctor")
    assert proc.returncode == 0 and "warn torch is a CPU build" in proc.stdout
    proc = run_cli("doctor", "--gpu", "--no-deepwave")
    assert proc.returncode == 1 and "fail torch is a CPU build" in proc.stdout


@pytest.mark.skipif(torch.version.cuda is not None, reason="this torch is a CUDA build")
def test_a_slurm_node_given_gpus_it_cannot_use_fails_naming_why():
    from hpcinv.distributed.cluster import check_gpu_node
    from hpcinv.errors import HpcinvError

    with pytest.raises(HpcinvError, match=r"node 3 of SLURM job 7 needs a working GPU, but: torch is a CPU build"):
        check_gpu_node("node 3 of SLURM job 7")
