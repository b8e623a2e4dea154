"""Read W&B offline run files back (tests only).

wandb 0.31 ships no Python reader for them (its DataStore moved into the Go wandb-core), hence this one.
A ``run-*.wandb`` file is a LevelDB-style log: a 7-byte header (``:W&B``, magic, version), then
32 KiB blocks of records ``crc32c (4) | length (2, LE) | type (1) | data`` where type is FULL (1),
FIRST (2), MIDDLE (3) or LAST (4); each complete record is a ``wandb_internal_pb2.Record``.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from wandb.proto import wandb_internal_pb2 as pb

BLOCK = 32768
HEADER = 7


def records(path: str | Path):
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B log"
    pos, pending = HEADER, b""
    while pos + 7 <= len(data):
        left = BLOCK - pos % BLOCK
        if left < 7:
            pos += left
            continue
        length, kind = struct.unpack("<HB", data[pos + 4 : pos + 7])
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 0 and length == 0:
            continue
        pending += chunk
        if kind in (1, 4):
            rec = pb.Record()
            rec.ParseFromString(pending)
            pending = b""
            yield rec


def history(run_dir: str | Path) -> list[dict]:
    """Every ``history`` row logged into the offline run(s) under ``run_dir/wandb``."""
    rows = []
    for file in sorted(Path(run_dir).glob("wandb/offline-run-*/run-*.wandb")):
        for rec in records(file):
            if rec.WhichOneof("record_type") == "history":
                rows.append(
                    {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in rec.history.item}
                )
    return rows


def kinds(run_dir: str | Path) -> dict[str, int]:
    out: dict[str, int] = {}
    for file in Path(run_dir).glob("wandb/offline-run-*/run-*.wandb"):
        for rec in records(file):
            k = rec.WhichOneof("record_type")
            out[k] = out.get(k, 0) + 1
    return out
