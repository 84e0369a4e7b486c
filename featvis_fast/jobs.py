"""Large-batch reconstruction jobs: work units sharded over torch.distributed ranks, checkpointed
atomically, resumable after any interruption (kill -9 included) with results identical to an
uninterrupted run.

A job is a list of work units (WorkUnit); a unit is one batch of images optimized together (a
Reconstruction, seeded by the job's seed and the unit's index, so its images do not depend on how many ranks
run). Rank r of W takes units r, r + W, ... Layout of the output directory:

    job.json                     the job's settings; a rerun with other settings is refused
    images/<name>.png            one per target, written when its unit finishes
    units/unit-<k>.json          a finished unit: names, objective values reached, steps
    units/unit-<k>.pt            its final float images (N, 3, H, W) in [0, 1]
    checkpoints/unit-<k>.pt      a running unit's state, every `checkpoint_every` steps
    grid.png, manifest.json      written by rank 0 once every unit is finished

Every file is written to a temporary name, flushed to disk and renamed over the old one, so a
kill leaves either the previous checkpoint or the new one. A rerun skips finished units and
continues running ones from their last checkpoint (losing at most `checkpoint_every` steps).
"""
from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from PIL import Image
from tqdm.auto import tqdm

from ._deprecation import warn_renamed
from .render import grid, to_pil

UNIT_SEED_STRIDE = 1_000_003  # unit k of a job with seed s runs with seed s * stride + k


@dataclass
class WorkUnit:
    """One work unit of a job: a batch of images optimized together.

    Attributes:
        index: the unit's number in the job.
        names: one per image (its file stem).
        build: build(seed) -> a fresh Reconstruction (featvis_fast.reconstruction._run) for
            these images.

    (0.1 called this `jobs.Unit`, which also named attribution targets; the old name still works
    for one release, with a DeprecationWarning.)
    """

    index: int
    names: list[str]
    build: Callable[[int], object]


def atomic_write(path: Path, write: Callable[[object], None], mode: str = "wb") -> None:
    """write(file) into a temporary file beside `path`, flushed to disk, then renamed over `path`:
    a kill leaves the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, mode) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path: Path, value) -> None:
    """`value` as indented JSON at `path`, atomically."""
    atomic_write(path, lambda fh: json.dump(value, fh, indent=2, sort_keys=True), "w")


def _write_png(path: Path, image: torch.Tensor) -> None:
    picture = to_pil(image)
    atomic_write(path, lambda fh: picture.save(fh, format="PNG"))


def rank_and_world() -> tuple[int, int]:
    """(rank, world size); under torchrun the process group is started here (gloo on the CPU,
    nccl with CUDA) if the caller has not."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1
    if not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(job_device())  # nccl's collectives run on this rank's GPU
            dist.init_process_group("nccl", device_id=job_device())
        else:
            dist.init_process_group("gloo")
    return dist.get_rank(), dist.get_world_size()


def job_device() -> torch.device:
    """cuda:LOCAL_RANK when CUDA is there, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def known_settings(out: Path, settings: dict, spec_name: str = "job.json") -> bool:
    """True when `out` holds this job already (its settings in out / spec_name); ValueError when it
    holds another one."""
    spec = out / spec_name
    if not spec.exists():
        return False
    known = json.loads(spec.read_text())
    if known != settings:
        changed = sorted(k for k in set(known) | set(settings) if known.get(k) != settings.get(k))
        raise ValueError(f"{out} holds a job with other settings ({', '.join(changed)} differ); "
                         "use another --out or the same settings")
    return True


def _unit_seed(seed: int, unit: WorkUnit) -> int:
    return seed * UNIT_SEED_STRIDE + unit.index


def _run_unit(unit: WorkUnit, out: Path, seed: int, steps: int, checkpoint_every: int, bar, run=None) -> dict:
    done = out / "units" / f"unit-{unit.index:05d}.json"
    if done.exists():
        bar.update(steps)
        return json.loads(done.read_text())
    run = run if run is not None else unit.build(_unit_seed(seed, unit))
    checkpoint = out / "checkpoints" / f"unit-{unit.index:05d}.pt"
    if checkpoint.exists():
        run.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=False))
    bar.update(run.step)
    while run.step < steps:
        run.run(min(checkpoint_every, steps - run.step), bar.update)
        if run.step < steps:
            state = run.state_dict()
            atomic_write(checkpoint, lambda fh: torch.save(state, fh))
    images = run.images().cpu()
    if len(unit.names) != images.shape[0]:
        raise RuntimeError(f"unit {unit.index} made {images.shape[0]} images for {len(unit.names)} names")
    for name, image in zip(unit.names, images):
        _write_png(out / "images" / f"{name}.png", image)
    atomic_write(done.with_suffix(".pt"), lambda fh: torch.save(images, fh))
    scores = run.scores.tolist() if run.scores is not None else [None] * len(unit.names)
    record = {"unit": unit.index, "names": unit.names, "values": scores, "steps": run.step}
    write_json(done, record)
    checkpoint.unlink(missing_ok=True)
    return record


def run_job(units: Sequence[WorkUnit], out: str | os.PathLike, *, steps: int, seed: int, settings: dict,
            checkpoint_every: int = 50, progress: bool = True) -> dict | None:
    """Run (or resume) the job; returns the manifest on rank 0 (None on other ranks)."""
    if not isinstance(checkpoint_every, int) or checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be an int >= 1, got {checkpoint_every!r}")
    names = [n for u in units for n in u.names]
    repeated = sorted(n for n, c in Counter(names).items() if c > 1)
    if repeated:
        raise ValueError(f"targets of the job share output names: {', '.join(repeated[:5])}")
    if not units:
        raise ValueError("the job has no targets")
    out = Path(out)
    rank, world = rank_and_world()
    settings = {**settings, "steps": steps, "seed": seed}
    known = known_settings(out, settings)
    mine = [u for u in units if u.index % world == rank]
    # the first unit is built before job.json exists: settings that cannot run fail without a trace
    first = mine[0].build(_unit_seed(seed, mine[0])) if mine and not known else None
    if world > 1:
        dist.barrier()
    if not known and rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "job.json", settings)
    with tqdm(total=steps * len(mine), desc=f"rank {rank}" if world > 1 else "job", disable=not progress) as bar:
        for k, unit in enumerate(mine):
            _run_unit(unit, out, seed, steps, checkpoint_every, bar, run=first if k == 0 else None)
    if world > 1:
        dist.barrier()
    if rank != 0:
        return None
    return _write_summary(units, out, settings)


def _write_summary(units: Sequence[WorkUnit], out: Path, settings: dict) -> dict:
    records = [json.loads((out / "units" / f"unit-{u.index:05d}.json").read_text()) for u in units]
    targets = [{"name": n, "file": f"images/{n}.png", "value": v, "unit": r["unit"]}
               for r in records for n, v in zip(r["names"], r["values"])]
    manifest = {"settings": settings, "seed": settings["seed"], "targets": targets}
    pictures = [Image.open(out / t["file"]).convert("RGB") for t in targets]
    columns = max(1, min(8, len(pictures)))
    sheet = grid(pictures, columns, labels=[t["name"] for t in targets], cell=min(256, pictures[0].width))
    atomic_write(out / "grid.png", lambda fh: sheet.save(fh, format="PNG"))
    write_json(out / "manifest.json", manifest)
    return manifest


def __getattr__(name: str):
    if name == "Unit":  # the 0.1 name of WorkUnit
        warn_renamed("featvis_fast.jobs.Unit", "featvis_fast.jobs.WorkUnit", stacklevel=2)
        return WorkUnit
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
