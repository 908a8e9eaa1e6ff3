"""Run metrics: one JSON object per line in the run folder's ``metrics.jsonl``, mirrored to TensorBoard when
installed. This module owns the format; :mod:`lwzoo.run_folder` owns the names."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from .run_folder import METRICS, TENSORBOARD


class MetricsLog:
    """Append-only metrics for one run folder.

    Rows are ``{"kind": "step" | "epoch" | ..., "step": int, ...}``. Opening with ``resume_step``
    drops rows logged after that step, so a resumed run does not repeat steps the crash lost.
    """

    def __init__(
        self, out_dir: Path, resume_step: int | None = None, tensorboard: bool = True, enabled: bool = True
    ) -> None:
        self.path, self.enabled = out_dir / METRICS, enabled
        self._tb = None
        if not enabled:  # a DDP rank other than 0: only rank 0 writes logs
            return

        if resume_step is not None and self.path.exists():
            rows = [r for r in read_metrics(self.path) if r.get("step", 0) <= resume_step]
            self.path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        self._file = open(self.path, "a", buffering=1)  # noqa: SIM115 (held open for the run, closed in close())
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(out_dir / TENSORBOARD), purge_step=resume_step)
            except ImportError:  # tensorboard is optional
                self._tb = None

    def log(self, kind: str, step: int, **values: Any) -> None:
        if not self.enabled:
            return
        row = {"kind": kind, "step": step, **values}

        self._file.write(json.dumps(row) + "\n")
        if self._tb is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                    self._tb.add_scalar(f"{kind}/{key}", value, step)

    def __enter__(self) -> MetricsLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if not self.enabled or self._file.closed:
            return
        self._file.close()

        if self._tb is not None:
            self._tb.close()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a ``metrics.jsonl``, skipping a torn last line."""
    rows = []
    for line in Path(path).read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows
