"""The one training loop. Every stage (pretrain, unlearn, distill, attack) calls `train` with its own objective.

What it does, in order, each optimizer step: fetch `grad_accum` micro-batches by index (so resume is exact),
objective loss -> backward, clip, set the scheduled LR, AdamW step; count tokens and FLOPs; log; evaluate and ask
the stop rule every `eval_every` steps; checkpoint every `checkpoint_every` steps.

Under `torchrun` / `accelerate launch` every process runs this loop on its share of each global batch
(`undo.core.distributed.shard_step`; the global batch stays `batch_size x grad_accum`), gradients are averaged
(DDP), token and FLOP counts and logged losses are summed over the processes, the main process evaluates and its
numbers reach every process, and only the main process writes the log and checkpoints.

With `compile` set, the objective's forwards and their backward run through `torch.compile(model)` (the same
weights; evaluation and saving read the plain module): faster steps after a one-time compile, the same numbers to
float rounding.

With `distributed.strategy: fsdp` (`undo.core.sharding`) the model, and the frozen models the objective holds, are
sharded across the processes before training: each process holds 1/N of every weight, gradient and optimizer
moment; clipping uses the whole gradient's norm; every process takes part in evaluations; checkpoints are written
shard by shard (torch.distributed.checkpoint) and load on any number of processes.

Checkpoints hold weights, optimizer moments, every process's RNG and the log's length, all as safetensors + JSON
(nothing is pickled). A sharded checkpoint is torch.distributed.checkpoint's files, whose metadata file is a pickle:
a run only resumes from the checkpoint in its own work folder, written under its own key, with every file's
checksum matching. A run that finds a checkpoint in its work directory resumes from it and ends with the same
numbers as an uninterrupted run. A NaN/inf loss stops the run with a clear error and leaves the last good checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from safetensors.torch import load_file, save_file
from safetensors.torch import load_model as load_model_weights
from safetensors.torch import save_model as save_model_weights

from undo.config import TrainConfig
from undo.core import distributed, interrupts, sharding, tracking
from undo.core.artifacts import file_sha256
from undo.core.compute import train_flops_per_token
from undo.schema.errors import TrainingDiverged, UserError
from undo.core.timing import phase
from undo.objectives import Objective
from undo.objectives.base import is_frozen

console = Console(stderr=True, soft_wrap=True)
Evaluate = Callable[[torch.nn.Module], dict[str, float]]
StopRule = Callable[[int, dict[str, float]], bool]  # (step, eval metrics) -> stop now?


@dataclass
class TrainResult:
    steps: int
    tokens: int
    flops: dict[str, int]
    stopped_early: bool
    final_metrics: dict[str, float]
    wall_time_s: float
    resumed_from: int | None = None
    history: list[dict[str, Any]] = field(default_factory=list)


COMPUTE_DTYPES = {"no": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def lr_at(step: int, cfg: TrainConfig, total_steps: int) -> float:
    """Linear warmup over `warmup_steps`, then constant or cosine decay to `min_lr_ratio * lr` at the end."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return cfg.lr
    progress = (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps)
    floor = cfg.min_lr_ratio * cfg.lr
    return floor + 0.5 * (cfg.lr - floor) * (1 + math.cos(math.pi * min(progress, 1.0)))


def evaluates_at(step: int, cfg: TrainConfig, total_steps: int) -> bool:
    """Whether the run evaluates after optimizer step `step`: at `eval_steps` if given, else every `eval_every`
    steps; always at the last step."""
    if step == total_steps:
        return True
    return step in cfg.eval_steps if cfg.eval_steps else step % cfg.eval_every == 0


def make_optimizer(params: list[torch.nn.Parameter], cfg: TrainConfig) -> torch.optim.AdamW:
    # Decay matrices only; norms' gains and biases are not decayed (the usual GPT recipe).
    matrices = [p for p in params if p.ndim >= 2]
    vectors = [p for p in params if p.ndim < 2]
    groups = [{"params": matrices, "weight_decay": cfg.weight_decay}, {"params": vectors, "weight_decay": 0.0}]
    # foreach: one multi-tensor update instead of a loop over tensors (torch's default only on GPUs); the same
    # numbers bit for bit (tests/test_engine.py), ~2 % less time per step at the attack's batch on the CPU
    # (benchmarks/step_costs.py).
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr, betas=cfg.betas, eps=cfg.eps,
                             foreach=True)


def train(
    model: torch.nn.Module,
    objective: Objective,
    batches,
    cfg: TrainConfig,
    total_steps: int,
    workdir: Path,
    *,
    evaluate: Evaluate | None = None,
    stop_rule: StopRule | None = None,
    eval_at_start: bool = False,
    progress: bool = True,
    description: str = "train",
    run_key: str = "",
    config_keys: str = "train",
) -> TrainResult:
    """Train `model` in place for `total_steps` optimizer steps; `batches[i]` is micro-batch i.

    `config_keys` names where the user sets these knobs (e.g. "pretrain.train"), for error messages.

    `workdir` holds metrics.jsonl and the resumable checkpoint/. `run_key` (e.g. the config hash) is stored in
    the checkpoint; a checkpoint written under another key is refused rather than silently mixed in.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    params = list(objective.trainable_parameters(model))
    with only_these_train(model, params):
        return _train(model, objective, batches, cfg, total_steps, workdir, params, evaluate, stop_rule,
                      eval_at_start, progress, description, run_key, config_keys)


@contextmanager
def only_these_train(model: torch.nn.Module, params: list[torch.nn.Parameter]):
    """Freeze every other parameter for the duration (no backward work, no stale grads), even if training fails."""
    trainable = {id(p) for p in params}
    frozen = [p for p in model.parameters() if id(p) not in trainable and p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in frozen:
            p.requires_grad_(True)


def _train(model, objective, batches, cfg, total_steps, workdir, params, evaluate, stop_rule, eval_at_start,
           progress, description, run_key, config_keys) -> TrainResult:
    # Accelerate keeps one state per process; each run sets its own precision (the process group stays).
    AcceleratorState._reset_state(reset_partial_state=False)
    sharded = distributed.sharded()
    # Under FSDP mixed precision is the sharding's own policy (bf16 weights gathered, fp32 gradient reduction).
    accelerator = Accelerator(cpu=not torch.cuda.is_available(),
                              mixed_precision="no" if sharded else cfg.mixed_precision)
    main = distributed.is_main()
    if sharded:
        if cfg.mixed_precision == "fp16":
            raise UserError(f"{description}: fp16 is not supported with distributed.strategy fsdp; set "
                            f"mixed_precision: bf16 (or no) in {config_keys}")
        plain = model
        root = sharding.shard(model, mixed_precision=cfg.mixed_precision)
        params = [p for p in model.parameters() if p.requires_grad]  # the sharded parameters replace the originals
        for held in objective.held_models():  # a frozen teacher or reference: sharded too, never in the optimizer
            if is_frozen(held) and COMPUTE_DTYPES[cfg.mixed_precision] is not None:
                held.to(dtype=COMPUTE_DTYPES[cfg.mixed_precision])  # held in the compute dtype, as under DDP
            sharding.shard(held)
        optimizer = make_optimizer(params, cfg)
    else:
        optimizer = make_optimizer(params, cfg)
        model, optimizer = accelerator.prepare(model, optimizer)
        plain = accelerator.unwrap_model(model)
        objective.to(accelerator.device, COMPUTE_DTYPES[cfg.mixed_precision])
    model.train()
    # Counted once per architecture on the device (a sharded model's count is a forward every process takes part in,
    # at the same point: the cache holds the same keys in every process).
    seq_len = next(t.shape[-1] for key, t in batches[0].items() if key.endswith("input_ids"))
    flops_per_token = train_flops_per_token(plain, seq_len)
    # The objective's forwards (and their backward) run through the compiled module, which shares the model's
    # weights; evaluation, checkpoints and the saved model read the plain one. dynamic=False: each stage's step has
    # one shape, and a fixed-shape graph is the faster one; a freshly loaded model of the same architecture reuses
    # the compiled code, so a process compiles once per kind of step.
    trained = torch.compile(model, dynamic=False) if cfg.compile else model

    log_path = workdir / "metrics.jsonl"
    checkpoint = Checkpoint(workdir / "checkpoint")
    state = {"step": 0, "tokens": 0, "flops": {}, "elapsed_s": 0.0, "last_eval": {}, "stopped_early": False}
    resumed_from = None
    if main:  # the main process judges the checkpoint (and sets a damaged one aside); the others follow it
        damage = None
        if checkpoint.exists():
            damage = checkpoint.damage(run_key, log_path) if log_path.is_file() else "its metrics.jsonl is missing"
        if damage is not None:  # never resume from a state that is not the one saved: start over, keeping evidence
            aside = checkpoint.set_aside()
            console.print(f"[yellow]{description}[/]: the checkpoint in {workdir} is damaged ({damage}); set aside "
                          f"as {aside.name}, starting over from step 0")
    if distributed.broadcast(main and checkpoint.exists()):
        state = checkpoint.load(plain, optimizer, run_key)
        resumed_from = state["step"]
        if main:
            console.print(f"[cyan]{description}[/]: resuming from the checkpoint of step {resumed_from} in {workdir}")
            with open(log_path, "r+b") as log:  # forget log lines written after the checkpoint
                log.truncate(state["log_bytes"])
    elif main and log_path.exists():
        log_path.unlink()
    distributed.wait_for_main()  # nobody trains until the main process has settled the work folder

    log = open(log_path, "a") if main else None
    tracker = tracking.stage_logger(workdir, resumed_from) if main else None  # a live view of the same lines

    def write(record: dict[str, Any]) -> None:
        if log is not None:
            log.write(json.dumps(record) + "\n")
            log.flush()
        if tracker is not None:
            tracker.log(tracking.numbers(record), record["step"])

    def close_logs() -> None:
        if log is not None:
            log.close()
        if tracker is not None:
            tracker.close()

    def run_eval(step: int) -> dict[str, float]:
        with phase("evaluation"):  # a sharded model's forward needs every process: each evaluates, main's count
            metrics = evaluate(plain) if evaluate and (main or sharded) else {}
        metrics = distributed.broadcast(metrics)  # every process takes the same stop decision
        write({"kind": "eval", "step": step, "tokens": state["tokens"], "flops": state["flops"], **metrics})
        return metrics

    start_time = time.perf_counter() - state["elapsed_s"]
    if eval_at_start and state["step"] == 0:
        state["last_eval"] = run_eval(0)
        if stop_rule and stop_rule(0, state["last_eval"]):
            state["stopped_early"] = True

    def accumulate(step: int) -> tuple[float, dict[str, float], int]:
        """Forward/backward of this process's share of the step's micro-batches into fresh gradients; (mean loss,
        logs, tokens), summed over the processes."""
        optimizer.zero_grad(set_to_none=True)
        global_step = [batches[step * cfg.grad_accum + micro] for micro in range(cfg.grad_accum)]
        mine, scale = distributed.shard_step(global_step, config_keys)
        sums: dict[str, float] = {"loss": 0.0, "tokens": 0}  # counts stay integers in one process
        for micro, cpu_batch in enumerate(mine):
            batch = {k: v.to(accelerator.device) for k, v in cpu_batch.items()}
            # Gradients are averaged over the processes once per step, at its last micro-batch.
            last = micro == len(mine) - 1
            if sharded:
                sharding.set_gradient_sync(root, last)
            with accelerator.no_sync(model) if not last and not sharded else contextlib.nullcontext():
                loss, logs = compiled_loss(batch) if cfg.compile else objective.loss(model, batch)
                loss_value = loss.item()
                if not math.isfinite(loss_value):
                    _diverged(loss_value, step)
                accelerator.backward(loss * scale)
            sums["loss"] += loss_value * scale
            for key, value in logs.items():
                sums[f"log.{key}"] = sums.get(f"log.{key}", 0.0) + value * scale
            tokens = objective.tokens(batch)
            sums["tokens"] += tokens
            for key, value in {"train": tokens * flops_per_token, **objective.extra_flops(batch)}.items():
                sums[f"flops.{key}"] = sums.get(f"flops.{key}", 0) + value
        sums = distributed.total_dict(sums)
        n = distributed.world_size()
        _add(state["flops"], {k[len("flops."):]: v for k, v in sums.items() if k.startswith("flops.")})
        extras = {k[len("log."):]: v / n for k, v in sums.items() if k.startswith("log.")}
        return sums["loss"] / n, extras, int(sums["tokens"])

    def compiled_loss(batch):
        try:
            return objective.loss(trained, batch)
        except torch._dynamo.exc.TorchDynamoException as err:  # e.g. no C++ compiler for inductor's CPU kernels
            section = config_keys if config_keys == "train" or config_keys.endswith(".train") \
                else config_keys.split(".")[0]
            reason = (str(err).strip().splitlines() or [""])[0][:200]
            raise UserError(f"{description}: torch.compile failed ({type(err).__name__}: {reason}); set "
                            f"{section}.compile: false to train in eager mode") from None

    def _diverged(loss_value: float, step: int) -> None:
        close_logs()
        kept = f"the last good checkpoint (step {checkpoint.step()}) is kept in {checkpoint.path}" \
            if checkpoint.exists() else "no checkpoint had been written yet"
        if config_keys == "train" or config_keys.endswith(".train"):
            fix = f"lower {config_keys}.lr (now {cfg.lr}), raise {config_keys}.warmup_steps or set {config_keys}.clip"
        else:  # a stage with a constant-LR grid: the LR is one of the grid's
            fix = f"lower the LR {cfg.lr:g} in {config_keys}"
        raise TrainingDiverged(f"{description}: loss became {loss_value} at step {step + 1}; {kept}; {fix}")

    bar = _progress_bar(progress and main, description)
    task = bar.add_task(description, total=total_steps, completed=state["step"], loss=float("nan"), tps=0.0)
    window_tokens, window_start = 0, time.perf_counter()
    shards_reported = False
    with bar:
        while state["step"] < total_steps and not state["stopped_early"]:
            interrupts.stop_if_requested()
            step = state["step"]
            lr = lr_at(step, cfg, total_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            with phase("training"):
                loss_mean, extras, step_tokens = accumulate(step)
                objective.adjust_gradients(params, lambda: accumulate(step))  # a no-op except for e.g. SAM
                clip = sharding.clip_gradients if sharded else accelerator.clip_grad_norm_
                grad_norm = clip(params, cfg.clip) if cfg.clip else None
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            if sharded and not shards_reported:  # what sharding saves, measured once the optimizer holds its state
                report = shard_report(model, optimizer)
                if main:
                    console.print(f"[cyan]{description}[/]: {report}")
                shards_reported = True
            state["step"] = step = step + 1
            state["tokens"] += step_tokens
            window_tokens += step_tokens

            if step % cfg.log_every == 0 or step == total_steps:
                now = time.perf_counter()
                tps = window_tokens / max(now - window_start, 1e-9)
                window_tokens, window_start = 0, now
                write({"kind": "train", "step": step, "loss": loss_mean, "lr": lr,
                       "grad_norm": None if grad_norm is None else float(grad_norm), "tokens": state["tokens"],
                       "flops": dict(state["flops"]), "tokens_per_s": tps, **extras})
                bar.update(task, loss=loss_mean, tps=tps)
            bar.update(task, completed=step)

            if evaluates_at(step, cfg, total_steps):
                state["last_eval"] = run_eval(step)
                if stop_rule and stop_rule(step, state["last_eval"]):
                    state["stopped_early"] = True
            if step % cfg.checkpoint_every == 0 and step < total_steps and not state["stopped_early"]:
                state["elapsed_s"] = time.perf_counter() - start_time
                state["log_bytes"] = log.tell() if log is not None else 0
                rng = distributed.gather(rng_state())  # a collective: every process takes part
                if sharded:  # every process writes its shards
                    checkpoint.save_sharded(model, optimizer, state, run_key, rng)
                elif main:
                    checkpoint.save(plain, optimizer, state, run_key, rng)
    close_logs()
    distributed.wait_for_main()  # the log is complete before anyone reads it
    return TrainResult(
        steps=state["step"], tokens=state["tokens"], flops=dict(state["flops"]),
        stopped_early=state["stopped_early"], final_metrics=state["last_eval"],
        wall_time_s=time.perf_counter() - start_time, resumed_from=resumed_from,
        history=read_metrics(log_path),
    )


def shard_report(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> str:
    """What each process holds of a sharded model's parameters and optimizer state, against the whole (a collective:
    every process takes part)."""
    tensors = {"parameter": list(model.parameters()), "optimizer-state": sharding.optimizer_tensors(optimizer)}
    held = distributed.gather({kind: sharding.local_bytes(t) for kind, t in tensors.items()})
    whole = {kind: sum(t.numel() * t.element_size() for t in ts) for kind, ts in tensors.items()}
    return "; ".join(f"{kind} bytes per process {[h[kind] for h in held]} of {whole[kind]}" for kind in tensors)


def _add(total: dict[str, int], more: dict[str, int]) -> None:
    for key, value in more.items():
        total[key] = total.get(key, 0) + int(value)


def read_metrics(path: Path) -> list[dict[str, Any]]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _progress_bar(enabled: bool, description: str) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("{task.fields[tps]:,.0f} tok/s"),
        TextColumn("ETA"), TimeRemainingColumn(), disable=not enabled,
    )


class Checkpoint:
    """A resumable training state in one folder, written atomically (to a temporary folder, then renamed)."""

    SHARDED = "sharded"  # the folder (and format name) of a checkpoint written by sharded processes

    def __init__(self, path: Path):
        self.path = path

    def exists(self) -> bool:
        # A save is interrupted between its two renames only: then the previous checkpoint is still whole in .old.
        old = self.path.with_name(self.path.name + ".old")
        if not self.path.exists() and (old / "state.json").is_file():
            old.rename(self.path)
        return (self.path / "state.json").is_file()

    def step(self) -> int:
        return json.loads((self.path / "state.json").read_text())["step"]

    # What a resume reads from state.json: the training state the engine keeps, and the checkpoint's own records.
    STATE_FIELDS = ("step", "tokens", "flops", "elapsed_s", "last_eval", "stopped_early", "log_bytes", "param_groups",
                    "run_key", "checksums")

    def damage(self, run_key: str, log_path: Path | None = None) -> str | None:
        """Why this checkpoint cannot be resumed from (unreadable or incomplete state, files that are not the ones
        saved, a log shorter than or different from the one it saved with), or None. A checkpoint of another run is
        not damage: that is a UserError (its folder belongs to someone else)."""
        try:
            state = json.loads((self.path / "state.json").read_text())
            checksums = dict(state["checksums"])
        except (OSError, ValueError, KeyError, TypeError) as err:
            return f"state.json unreadable: {type(err).__name__}"
        if state.get("run_key") != run_key:
            raise UserError(f"the checkpoint in {self.path} belongs to another run (key {state.get('run_key')}, "
                            f"this run is {run_key}); delete that folder to start over")
        missing = [name for name in self.STATE_FIELDS if name not in state]
        if missing:
            return f"state.json has no {missing[0]}"
        for name, digest in checksums.items():
            path = self.path / name
            if not path.is_file() or file_sha256(path) != digest:
                return f"{name} is not the file that was saved"
        if log_path is not None:  # the log is cut back to where the checkpoint was saved: it must reach that far
            try:
                with open(log_path, "rb") as log:
                    saved = log.read(int(state["log_bytes"]))
                lines = saved.decode("utf-8").splitlines()
                [json.loads(line) for line in lines if line.strip()]
            except (OSError, ValueError, TypeError) as err:  # a decoding or JSON error is a ValueError
                return f"its metrics.jsonl is unreadable ({type(err).__name__})"
            if len(saved) < int(state["log_bytes"]):
                return "its metrics.jsonl is shorter than when the checkpoint was saved"
        return None

    def set_aside(self) -> Path:
        """Rename the checkpoint out of the way (kept, not deleted) and return its new path."""
        aside = self.path.with_name(f"{self.path.name}.damaged-{time.strftime('%Y%m%dT%H%M%S')}")
        self.path.rename(aside)
        return aside

    def save(self, model, optimizer, state: dict[str, Any], run_key: str,
             rng: list[dict[str, torch.Tensor]] | None = None) -> None:
        """`rng`: every process's RNG states, in rank order (default: this process's)."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_model_weights(model, str(tmp / "model.safetensors"))  # tied weights (a shared head) stored once
        opt_state = optimizer.state_dict()
        tensors = {f"rng.{rank}.{name}": value for rank, states in enumerate(rng or [rng_state()])
                   for name, value in states.items()}
        for index, slots in opt_state["state"].items():
            for name, value in slots.items():
                tensors[f"optimizer.{index}.{name}"] = torch.as_tensor(value).contiguous().cpu()
        save_file(tensors, tmp / "optimizer.safetensors")
        groups = [{k: v for k, v in g.items()} for g in opt_state["param_groups"]]
        checksums = {name: file_sha256(tmp / name) for name in ("model.safetensors", "optimizer.safetensors")}
        (tmp / "state.json").write_text(json.dumps({**state, "run_key": run_key, "param_groups": groups,
                                                    "checksums": checksums}))
        self._replace_with(tmp)

    def save_sharded(self, model, optimizer, state: dict[str, Any], run_key: str,
                     rng: list[dict[str, torch.Tensor]]) -> None:
        """`save` for a model sharded across the processes (every process calls it): each writes its shards of the
        weights and optimizer state into `sharded/` (torch.distributed.checkpoint), the main one the rest; the same
        atomic renames."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        if distributed.is_main():
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        distributed.wait_for_main()
        sharding.save_state(model, optimizer, tmp / self.SHARDED)
        distributed.wait_for_main()
        if distributed.is_main():
            save_file({f"rng.{rank}.{name}": value for rank, states in enumerate(rng) for name, value in states.items()},
                      tmp / "rng.safetensors")
            files = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file())
            checksums = {name: file_sha256(tmp / name) for name in files}
            (tmp / "state.json").write_text(json.dumps({**state, "run_key": run_key, "format": self.SHARDED,
                                                        "param_groups": [], "checksums": checksums}))
            self._replace_with(tmp)
        distributed.wait_for_main()

    def _replace_with(self, tmp: Path) -> None:
        old = self.path.with_name(self.path.name + ".old")
        if self.path.exists():
            self.path.rename(old)
        tmp.rename(self.path)
        shutil.rmtree(old, ignore_errors=True)

    def load(self, model, optimizer, run_key: str) -> dict[str, Any]:
        """Restore the saved state into `model` and `optimizer` (call `damage` first: this trusts the files). A
        sharded checkpoint loads into a sharded or a whole model, on any number of processes; a whole one (one
        process or DDP) into a whole model."""
        state = json.loads((self.path / "state.json").read_text())
        state.pop("checksums", None)
        if state.pop("format", None) == self.SHARDED:
            sharding.load_state(model, optimizer, self.path / self.SHARDED)
            state.pop("param_groups", None)
            set_rng_state(self._rng_states(load_file(self.path / "rng.safetensors")))
            return state
        if sharding.is_sharded(model):
            raise UserError(f"the checkpoint in {self.path} was written by one process or under DDP; resume it with "
                            "distributed.strategy: ddp, or delete that folder to start over")
        load_model_weights(model, str(self.path / "model.safetensors"))
        tensors = load_file(self.path / "optimizer.safetensors")
        set_rng_state(self._rng_states(tensors))
        slots: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in tensors.items():
            _, index, name = key.split(".", 2)
            slots.setdefault(int(index), {})[name] = value
        optimizer.load_state_dict({"state": slots, "param_groups": state.pop("param_groups")})
        return state

    @staticmethod
    def _rng_states(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """This process's saved RNG states, taken out of `tensors` (`rng.<rank>.<generator>`). Each process resumes
        its own; a run resumed with more processes than it saved gives the new ones the main process's state (the
        data order never depends on it: batches are read by index)."""
        rngs: dict[int, dict[str, torch.Tensor]] = {}
        for key in [k for k in tensors if k.startswith("rng.")]:
            parts = key.split(".", 2)  # rng.<rank>.<generator>; a checkpoint from before ranks: rng.torch
            rank, name = (int(parts[1]), parts[2]) if len(parts) == 3 else (0, parts[1])
            rngs.setdefault(rank, {})[name] = tensors.pop(key)
        return rngs.get(distributed.rank(), rngs.get(0, {}))


def rng_state() -> dict[str, torch.Tensor]:
    """This process's RNG states: the CPU generator's and, on a GPU, the current device's."""
    states = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state()
    return states


def set_rng_state(states: dict[str, torch.Tensor]) -> None:
    if "torch" in states:
        torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state(states["cuda"])
