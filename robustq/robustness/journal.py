"""Resumable evaluation: a killed evaluation continues where it stopped, with the same record.

The strong suite or AutoAttack on a CPU runs for hours, and a job can stop at any time. While
``robustq eval`` runs, its progress is kept in one file beside the results,
``<results>.eval-<suite>.<fingerprint>.partial.safetensors``: inside an attack, after a batch
at most every 30 seconds, the adversarial images made so far, the random generators' state and
the attack's own counters; after every attack, its per-example correctness and the
generators' state. Run the same command again and it continues after the last batch it kept.
Every attack starts from its own seed and the generators are restored where they stood, so the
record is the one an uninterrupted evaluation writes (bit for bit on the same machine, torch
build and thread count; on GPUs only as far as their kernels are deterministic).
``robustq eval`` removes the file once the record is written.

A journal belongs to one evaluation: its name carries the first 12 hex digits of a SHA-256
fingerprint of the model (weights, buffers, structure), the surrogate model if any, the images
(values and memory format), the labels and the settings that change a number (suite, eps,
EOT samples, draws, batch size, seed, the attacks in order with their hyperparameters, device,
autocast dtype, the versions of torch, robustq and pyautoattack), and the whole fingerprint is
stored inside. So an evaluation with other settings never touches another's journal (each can
be continued). As a second guard each phase stores a hash of its clean predictions and drops
entries made after different ones. It is read with safetensors (tensors and a JSON header,
never pickle); a damaged file is set aside with one line of warning. Not journaled: a torchrun
job (each rank would need its own file: an interrupted distributed evaluation starts over) and
a model with no tensors to fingerprint (an ONNX file, whose black-box evaluation is cheap).

What is not journaled, because it is short next to the attacks: the clean draws (recomputed
identically), the masking checks and the robustness curve.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn

FORMAT = "robustq-eval-journal"
VERSION = 1


def _tensor_bytes(t: torch.Tensor) -> bytes:
    t = t.detach().to("cpu").contiguous().reshape(-1)
    return t.view(torch.uint8).numpy().tobytes()


def _module(h, model: nn.Module) -> None:
    h.update(repr(model).encode())
    for k, v in model.state_dict().items():
        h.update(f"{k}:{v.dtype}:{tuple(v.shape)}".encode())
        h.update(_tensor_bytes(v))


def fingerprint(model: nn.Module, x: torch.Tensor, y: torch.Tensor, settings: dict,
                surrogate: Optional[nn.Module] = None) -> Optional[str]:
    """SHA-256 over the model (and surrogate), the data and ``settings``; None for a model
    with no tensors to identify it by (an ONNX file run by onnxruntime: not journaled)."""
    if not model.state_dict():
        return None
    h = hashlib.sha256()
    _module(h, model)
    if surrogate is not None:
        h.update(b"surrogate")
        _module(h, surrogate)
    for t in (x, y):
        channels_last = t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last)
        h.update(f"{t.dtype}:{tuple(t.shape)}:{t.device.type}:{channels_last}".encode())
        h.update(_tensor_bytes(t))
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return h.hexdigest()


def _rng_states(device: torch.device) -> list[torch.Tensor]:
    states = [torch.get_rng_state()]
    if device.type == "cuda":
        states.append(torch.cuda.get_rng_state(device))
    return states


def _put(tensors: dict, prefix: str, states: list[torch.Tensor]) -> None:
    for i, s in enumerate(states):
        tensors[f"{prefix}{i}"] = s.contiguous()


def _get(tensors: dict, prefix: str) -> list[torch.Tensor]:
    """The states ``_put`` wrote under ``prefix``, in their order (numeric, not string, order)."""
    keys = [k for k in tensors if k.startswith(prefix)]
    return [tensors[k] for k in sorted(keys, key=lambda k: int(k[len(prefix):]))]


def _set_rng_states(states: list[torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(states[0])
    if device.type == "cuda" and len(states) > 1:
        torch.cuda.set_rng_state(states[1], device)


class Journal:
    """The progress of one evaluation in ``path`` (see the module docstring). Progress inside
    an attack is written at most every ``every_s`` seconds (a pass over 10,000 MNIST images
    holds 31 MB of adversarial images; FGSM makes a batch of them in well under a second);
    a finished attack is always written."""

    every_s = 30.0

    def __init__(self, path: str | Path, key: str, log: Callable[[str], None] = print) -> None:
        self.path, self.key = Path(path), key
        self._last = time.monotonic()
        self.done: dict[str, dict] = {}      # "phase/attack" -> {"correct", "seconds", "state"}
        self.partial: Optional[dict] = None  # the attack under way
        self.phases: dict[str, str] = {}     # phase -> hash of its clean predictions
        self.reused_seconds = 0.0            # attack time of earlier runs this one reuses
        self.resumed = False
        self._load(log)

    # --- reading ------------------------------------------------------------------------

    def _load(self, log) -> None:
        if not self.path.is_file():
            return
        try:
            from safetensors import safe_open
            with safe_open(str(self.path), framework="pt") as f:
                meta = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}
            if meta.get("format") != FORMAT or meta.get("version") != str(VERSION):
                raise ValueError("not an evaluation journal of this version")
            entries = json.loads(meta["entries"])
        except Exception as e:   # safetensors, json: each malformation has its own type
            log(f"warning: {self.path} is not a readable partial evaluation ({type(e).__name__}); "
                f"it is set aside and the evaluation starts from the beginning")
            return
        if meta.get("key") != self.key:
            log(f"{self.path} belongs to another evaluation (other model, data or settings); "
                f"starting from the beginning (it is replaced)")
            return
        self.phases = dict(entries.get("phases", {}))
        for name, e in entries["done"].items():
            self.done[name] = {**e, "correct": tensors[f"done/{name}"],
                               "rng": _get(tensors, f"done/{name}/rng/")}
        p = entries.get("partial")
        if p is not None:
            self.partial = {**p, "x_adv": tensors["partial/x_adv"], "rng": _get(tensors, "partial/rng/")}
        self.resumed = bool(self.done or self.partial)

    def describe(self) -> str:
        what = [f"{len(self.done)} attack pass{'es' if len(self.done) != 1 else ''} finished"]
        if self.partial:
            what.append(f"{self.partial['name'].split('/', 1)[1]} after {self.partial['batches']} "
                        f"batch{'es' if self.partial['batches'] != 1 else ''}")
        return ", ".join(what)

    def start_phase(self, phase: str, clean: torch.Tensor, log: Callable[[str], None]) -> None:
        """Check (or record) ``phase``'s clean predictions: kept entries made after other ones
        are dropped (they cannot belong to this evaluation)."""
        digest = hashlib.sha256(_tensor_bytes(clean)).hexdigest()
        old = self.phases.get(phase)
        if old is not None and old != digest:
            log(f"warning: {self.path}: the clean predictions differ from the kept ones, so its "
                f"{phase} attacks are run again")
            self.done = {k: v for k, v in self.done.items() if not k.startswith(f"{phase}/")}
            if self.partial is not None and self.partial["name"].startswith(f"{phase}/"):
                self.partial = None
        self.phases[phase] = digest

    def due(self) -> bool:
        """Whether progress inside an attack should be written now (``every_s``)."""
        return time.monotonic() - self._last >= self.every_s

    def finished(self, name: str) -> Optional[dict]:
        return self.done.get(name)

    def progress(self, name: str, n_alive: int) -> Optional[dict]:
        p = self.partial
        if p is None or p["name"] != name or p["n_alive"] != n_alive:
            return None
        return p

    def restore(self, entry: dict, device: torch.device) -> None:
        """Continue from ``entry`` (finished or partial): the generators as they stood when it
        was written; its attack time counts towards this evaluation's."""
        _set_rng_states(entry["rng"], device)
        self.reused_seconds += float(entry["seconds"])

    # --- writing ------------------------------------------------------------------------

    def save_progress(self, name: str, *, batches: int, n_alive: int, x_adv: torch.Tensor,
                      seconds: float, state: dict, device: torch.device) -> None:
        self.partial = {"name": name, "batches": batches, "n_alive": n_alive,
                        "seconds": seconds, "state": state, "x_adv": x_adv.detach().to("cpu"),
                        "rng": _rng_states(device)}
        self._write()

    def finish(self, name: str, *, correct: torch.Tensor, seconds: float, state: dict,
               device: torch.device) -> None:
        self.done[name] = {"correct": correct.to("cpu"), "seconds": seconds, "state": state,
                           "rng": _rng_states(device)}
        self.partial = None
        self._write()

    def _write(self) -> None:
        from safetensors.torch import save

        from ..checkpoint import atomic_write
        tensors = {f"done/{k}": v["correct"].contiguous() for k, v in self.done.items()}
        for k, v in self.done.items():
            _put(tensors, f"done/{k}/rng/", v["rng"])
        entries = {"done": {k: {"seconds": v["seconds"], "state": v["state"]}
                            for k, v in self.done.items()}, "partial": None,
                   "phases": self.phases}
        if self.partial is not None:
            p = self.partial
            tensors["partial/x_adv"] = p["x_adv"].contiguous()
            _put(tensors, "partial/rng/", p["rng"])
            entries["partial"] = {k: p[k] for k in ("name", "batches", "n_alive", "seconds", "state")}
        meta = {"format": FORMAT, "version": str(VERSION), "key": self.key,
                "entries": json.dumps(entries)}
        atomic_write(self.path, save(tensors, metadata=meta))
        self._last = time.monotonic()

class Place:
    """Where an evaluation that writes ``results`` keeps its progress: the file is named once
    the fingerprint is known (``file``; None while unknown or when nothing is journaled)."""

    def __init__(self, results: Path, suite: str) -> None:
        stem = results.name[:-5] if results.name.endswith(".json") else results.name
        self.stem = results.with_name(f"{stem}.eval-{suite}")
        self.file: Optional[Path] = None

    def name(self, key: str) -> Path:
        self.file = self.stem.with_name(f"{self.stem.name}.{key[:12]}.partial.safetensors")
        return self.file

    def remove(self) -> None:
        if self.file is not None:
            self.file.unlink(missing_ok=True)
