"""What a user sees of a run: log.txt, metrics.jsonl, TensorBoard, progress bar, PNG plots.

Only the main process writes files; every process may call these methods.
"""
import json
import logging
import os
import sys
import time
from typing import Dict, Iterable, Optional

from . import distributed as du

LOG_FORMAT = "[%(asctime)s] %(levelname)s %(message)s"


def setup_logging(output_dir: str, name: str = "octvideo") -> logging.Logger:
    """Console (rank 0 only) and ``OUTPUT_DIR/log.txt`` (appended, so a resumed run keeps its history)."""
    logger = logging.getLogger(name)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()
    if du.is_main_process():
        console = logging.StreamHandler(sys.stdout)
        console.setFormatter(logging.Formatter(LOG_FORMAT, "%H:%M:%S"))
        logger.addHandler(console)
        os.makedirs(output_dir, exist_ok=True)
        fh = logging.FileHandler(os.path.join(output_dir, "log.txt"))
        fh.setFormatter(logging.Formatter(LOG_FORMAT))
        logger.addHandler(fh)
    else:
        logger.addHandler(logging.NullHandler())
    return logger


class MetricsWriter:
    """``metrics.jsonl`` (one JSON object per logged step / evaluation) and TensorBoard scalars."""

    def __init__(self, output_dir: str, tensorboard: bool = True):
        self.enabled = du.is_main_process()
        self.path = os.path.join(output_dir, "metrics.jsonl")
        self.tb = None
        if self.enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(os.path.join(output_dir, "tensorboard"))
            except ImportError:  # tensorboard is a declared dependency; keep running without it
                self.tb = None

    def write(self, record: Dict, step: int) -> None:
        if not self.enabled:
            return
        record = dict(record, time=round(time.time(), 3))
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            prefix = record.get("kind", "train")
            for k, v in record.items():
                if isinstance(v, (int, float)) and k not in ("epoch", "iteration", "time"):
                    self.tb.add_scalar(f"{prefix}/{k}", v, step)
            self.tb.flush()

    def truncate_after(self, iteration: int) -> None:
        """On resume, drop records written after the checkpoint we resume from (they will be redone)."""
        if not self.enabled or not os.path.exists(self.path):
            return
        with open(self.path) as f:
            lines = [ln for ln in f if ln.strip()]
        kept = [ln for ln in lines if json.loads(ln).get("iteration", 0) <= iteration]
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            f.writelines(kept)
        os.replace(tmp, self.path)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def read_metrics(path: str) -> list:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(ln) for ln in f if ln.strip()]


class Progress:
    """A tqdm bar on a terminal; plain log lines every ``log_period`` iterations otherwise."""

    def __init__(self, total: int, desc: str, logger: logging.Logger, log_period: int):
        self.logger, self.log_period, self.desc, self.total = logger, max(1, log_period), desc, total
        self.bar = None
        if du.is_main_process() and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, dynamic_ncols=True, leave=False)
        self.count = 0

    def update(self, **postfix) -> None:
        self.count += 1
        if self.bar is not None:
            self.bar.update(1)
            if self.count % self.log_period == 0 or self.count == self.total:
                self.bar.set_postfix({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in postfix.items()})
        elif self.count % self.log_period == 0 or self.count == self.total:
            items = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in postfix.items())
            self.logger.info(f"{self.desc} [{self.count}/{self.total}] {items}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
