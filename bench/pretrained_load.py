"""zoo.load's time for each shipped model, and the size of the installed package.

    python bench/pretrained_load.py                                  # the models in zoo/pretrained
    ZOO_PRETRAINED_DIR=/tmp/models python bench/pretrained_load.py   # another folder of them

The loading code is imported first (its time reported on its own line: torch, Lightning and
the families); then each model is loaded ``--repeats`` times and the median is reported, the
cost of ``zoo.load(name)`` once Python has imported zoo (the issue's budget: 1 s). The
installed size is that of a wheel built from this checkout (``pip wheel --no-deps``),
unpacked: what a non-editable ``pip install .`` puts in site-packages, shipped models included.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def folder_size(path: Path) -> int:
    """Return the bytes of the files under ``path``."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def wheel_sizes() -> tuple[int, int, int]:
    """Return the bytes of a wheel of this checkout, of its files unpacked, and of the files
    under zoo/pretrained/ among them."""
    with tempfile.TemporaryDirectory() as scratch:
        source = Path(scratch) / "source"
        source.mkdir()
        for name in ("pyproject.toml", "README.md"):
            shutil.copy(ROOT / name, source / name)
        for name in ("zoo", "hydra_plugins"):
            ignore = shutil.ignore_patterns("__pycache__", ".*")
            shutil.copytree(ROOT / name, source / name, ignore=ignore)
        command = [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps"]
        command += ["--no-build-isolation", "-q", "-w", str(Path(scratch) / "wheel")]
        subprocess.run(command, check=True, capture_output=True)
        [wheel] = (Path(scratch) / "wheel").glob("*.whl")
        entries = zipfile.ZipFile(wheel).infolist()
        unpacked = sum(entry.file_size for entry in entries)
        pretrained = sum(e.file_size for e in entries if e.filename.startswith("zoo/pretrained/"))
        return wheel.stat().st_size, unpacked, pretrained


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, help="torch's intra-op threads (default: its own)")
    args = parser.parse_args()

    start = time.perf_counter()
    import zoo.pretrained.folder  # noqa: F401 (torch, Lightning, every family)

    print(f"import of the loading code: {time.perf_counter() - start:.2f} s")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch threads: {torch.get_num_threads()}")
    from zoo.pretrained import list_models, load, registry_dir

    root = registry_dir()
    rows = list_models()
    total = sum(folder_size(root / row["name"]) for row in rows)
    print(f"models in {root}: {len(rows)}, {total / 1e6:.2f} MB\n")
    print(f"{'model':<22}{'parameters':>12}  {'MB':>6}  {'first load':>10}  {'median load':>11}")
    for row in rows:
        times = []
        for _ in range(args.repeats + 1):
            start = time.perf_counter()
            load(row["name"])
            times.append(time.perf_counter() - start)
        size = folder_size(root / row["name"]) / 1e6
        print(
            f"{row['name']:<22}{row['parameters']:>12,}  {size:>6.2f}  {times[0]:>8.3f} s"
            f"  {statistics.median(times[1:]):>9.3f} s"
        )
    wheel, unpacked, pretrained = wheel_sizes()
    print(
        f"\nwheel of this checkout: {wheel / 1e6:.2f} MB; installed (unpacked) "
        f"{unpacked / 1e6:.2f} MB, of which zoo/pretrained {pretrained / 1e6:.2f} MB"
    )


if __name__ == "__main__":
    main()
