"""Executors: where a plan's tasks run. One small interface, `submit(task, inputs) -> Future`, so the scheduling
(`execute`: each task as soon as its inputs exist, skips, the manifest after every task) is written once:

- `SerialExecutor`: in this process, in plan order (the default; what a dry run uses);
- `PoolExecutor`: a local pool of N worker processes, each with its share of the CPU threads;
- `RayExecutor`: every task a Ray task on a cluster (or a local Ray), with the CPUs and GPUs its stage asks for.

`undo run --executor NAME` picks one of `EXECUTORS`, the registry of executor kinds: a kind checks the options it is
given before any work starts (`check`) and opens its executor (`open`). Adding one = one class here with
`@register_executor(name)`.

A task travels to a worker with its inputs (run-relative artifact paths) and comes back with its output.
"""

from __future__ import annotations

import os
import pickle
from abc import ABC, abstractmethod
from pathlib import Path
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from typing import Any, ClassVar, Protocol

from rich.console import Console

from undo.core.registry import registrar
from undo.config import ExperimentConfig
from undo.core import distributed, interrupts
from undo.core.processes import die_with_parent
from undo.core.artifacts import NotComputed, stable_hash
from undo.schema.errors import UserError
from undo.study.plan import Plan, SkipTask, Task

console = Console(stderr=True, soft_wrap=True)  # paths stay whole in logs


class Executor(Protocol):
    def submit(self, task: Task, inputs: dict[str, Any]) -> Future: ...

    def close(self, cancel: bool) -> None: ...


EXECUTORS: dict[str, type["ExecutorKind"]] = {}


register_executor = registrar(EXECUTORS)  # `@register_executor(name)` on a class adds it to EXECUTORS


class ExecutorKind(ABC):
    """A way of running a study's tasks, as `undo run --executor NAME` names it (used as a class: its methods are
    class methods)."""

    name: ClassVar[str] = "executor"

    @classmethod
    def default_workers(cls, cfg: ExperimentConfig) -> int:
        return 1

    @classmethod
    def check(cls, cfg: ExperimentConfig, workers: int, address: str | None) -> None:
        """One-line errors for options this kind cannot honour, before the run directory is locked."""

    @classmethod
    @abstractmethod
    def open(cls, cfg: ExperimentConfig, workers: int, address: str | None) -> Executor:
        """The executor that runs the study's tasks (after `check` accepted the options)."""

    @classmethod
    def serial(cls, workers: int) -> bool:
        """Whether tasks run one at a time in this process (then their progress bars can be shown)."""
        return False


def executor_kind(name: str) -> type[ExecutorKind]:
    if name not in EXECUTORS:
        raise UserError(f"--executor takes {' or '.join(EXECUTORS)}, got {name!r}")
    return EXECUTORS[name]


@register_executor("local")
class LocalExecutors(ExecutorKind):
    """This machine: in this process (one worker), or a pool of worker processes."""

    @classmethod
    def default_workers(cls, cfg: ExperimentConfig) -> int:
        # The study's own default applies where this process schedules the stages (not under torchrun).
        return 1 if distributed.launched() else cfg.study.workers or 1

    @classmethod
    def check(cls, cfg: ExperimentConfig, workers: int, address: str | None) -> None:
        if address is not None:
            raise UserError("--address names a Ray cluster: it needs --executor ray")
        if workers > 1 and distributed.launched():
            raise UserError("--workers runs stages side by side in one machine's processes; under torchrun every "
                            "process already trains each stage together: drop --workers (or torchrun)")

    @classmethod
    def open(cls, cfg: ExperimentConfig, workers: int, address: str | None) -> Executor:
        return SerialExecutor() if workers == 1 else PoolExecutor(workers)

    @classmethod
    def serial(cls, workers: int) -> bool:
        return workers == 1


class SerialExecutor:
    """Runs each task when it is submitted; its future is already settled."""

    def submit(self, task: Task, inputs: dict[str, Any]) -> Future:
        interrupts.stop_if_requested()
        future: Future = Future()
        try:
            future.set_result(task.run(inputs))
        except (SkipTask, NotComputed) as reason:
            future.set_exception(reason)
        return future  # any other error propagates at once, with its traceback

    def close(self, cancel: bool) -> None:
        pass


class PoolExecutor:
    """`workers` processes; each gets cpu_count / workers threads (independent stages share the CPU)."""

    def __init__(self, workers: int):
        threads = max(1, (os.cpu_count() or 1) // workers)
        self.pool = ProcessPoolExecutor(max_workers=workers, initializer=_worker_init, initargs=(threads,))

    def submit(self, task: Task, inputs: dict[str, Any]) -> Future:
        return self.pool.submit(_run_task, task, inputs)

    def close(self, cancel: bool) -> None:
        self.pool.shutdown(wait=not cancel, cancel_futures=cancel)


def _worker_init(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    die_with_parent()


def _run_task(task: Task, inputs: dict[str, Any]) -> Any:
    return task.run(inputs)


@register_executor("ray")
class RayExecutors(ExecutorKind):
    """A Ray cluster (or a local Ray): every stage a Ray task with the resources it asks for."""

    @classmethod
    def check(cls, cfg: ExperimentConfig, workers: int, address: str | None) -> None:
        if workers > 1 or distributed.launched():
            raise UserError("--executor ray schedules every stage on the cluster itself: drop --workers (and "
                            "torchrun)")

    @classmethod
    def open(cls, cfg: ExperimentConfig, workers: int, address: str | None) -> Executor:
        return RayExecutor(cfg.run_dir, address, cfg.resources)


class RayExecutor:
    """Each task a Ray task (`ray.remote`), launched when the scheduler submits it (as soon as its inputs exist),
    with its stage's resources: GPUs for training stages when the cluster has any, CPUs otherwise. A stage whose kind
    the config gives several workers (`resources: {distill: {workers: 8}}`) runs instead as a Ray Train
    `TorchTrainer` job: every worker runs the stage as a torchrun process would (DDP, or FSDP with
    `distributed.strategy: fsdp`), the first one writes. Artifacts are written by the workers into the run
    directory, which every node must see (a shared filesystem): checked at start on every node. A local Ray is
    started when no address is given."""

    def __init__(self, run_dir: str, address: str | None = None, stage_workers: dict | None = None):
        try:
            import ray
        except ImportError:
            raise UserError("the Ray executor needs Ray: pip install -e \".[ray]\" (or pip install ray)") from None
        self.ray = ray
        self.started_here = not ray.is_initialized()
        if self.started_here:
            try:
                ray.init(address=address, include_dashboard=False, log_to_driver=True, configure_logging=False)
            except ConnectionError as err:
                raise UserError(f"cannot reach the Ray cluster at {address} ({err}); start it (`ray start --head`) "
                                "or check --address") from None
        self.gpus = ray.cluster_resources().get("GPU", 0) > 0
        self.remote = ray.remote(_run_captured)
        self.pending: list[Any] = []
        self.run_dir = Path(run_dir).resolve()
        self.jobs = {kind: spec for kind, spec in (stage_workers or {}).items() if spec.workers > 1}
        self._check_job_resources()
        self.job_threads = ThreadPoolExecutor(max_workers=8, thread_name_prefix="ray-train")
        self._check_run_dir_everywhere(self.run_dir)

    def _worker_resources(self, kind: str) -> dict[str, float]:
        spec = self.jobs[kind]
        gpus = spec.gpus_per_worker if spec.gpus_per_worker is not None else (1.0 if self.gpus else 0.0)
        return {"CPU": spec.cpus_per_worker, **({"GPU": gpus} if gpus else {})}

    def _check_job_resources(self) -> None:
        """A job waits until all its workers fit at once: a job that never can is refused before any work."""
        cluster = self.ray.cluster_resources()
        for kind, spec in self.jobs.items():
            for resource, each in self._worker_resources(kind).items():
                if spec.workers * each > cluster.get(resource, 0):
                    raise UserError(f"resources.{kind}: {spec.workers} workers x {each:g} {resource} need "
                                    f"{spec.workers * each:g}, but the Ray cluster has {cluster.get(resource, 0):g}; "
                                    "lower workers or the per-worker share")

    def _check_run_dir_everywhere(self, run_dir: Path) -> None:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        marker = run_dir / f".ray-visible-{os.getpid()}"
        marker.write_text("undo\n")
        try:
            nodes = [n for n in self.ray.nodes() if n.get("Alive")]
            probe = self.ray.remote(num_cpus=0)(_sees).options
            seen = self.ray.get([probe(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                                 .remote(str(marker)) for n in nodes])
        finally:
            marker.unlink(missing_ok=True)
        blind = [n["NodeManagerAddress"] for n, ok in zip(nodes, seen) if not ok]
        if blind:
            raise UserError(f"run_dir {run_dir} is not visible on Ray node(s) {', '.join(blind)}; put it on a "
                            "filesystem every node mounts at the same path")

    def submit(self, task: Task, inputs: dict[str, Any]) -> Future:
        if task.stage is not None and task.stage.kind in self.jobs:
            return self.job_threads.submit(self._train_job, task, inputs)
        gpus = task.resources.gpus if self.gpus else 0
        ref = self.remote.options(num_cpus=task.resources.cpus, num_gpus=gpus, max_retries=0,
                                  name=task.name).remote(task, inputs)
        self.pending.append(ref)
        outer: Future = Future()

        def settle(inner: Future) -> None:
            try:
                status, value = inner.result()
            except BaseException as err:  # an internal error in the task, with its remote traceback
                outer.set_exception(err)
                return
            if status == "ok":
                outer.set_result(value)
            else:
                outer.set_exception(value)

        ref.future().add_done_callback(settle)
        return outer

    def _train_job(self, task: Task, inputs: dict[str, Any]) -> Any:
        """Run `task` as a Ray Train job of its stage kind's workers; its output (or its own error) comes back
        through a file the first worker writes in the run directory."""
        from ray.train import RunConfig, ScalingConfig
        from ray.train.torch import TorchTrainer

        kind = task.stage.kind
        resources = self._worker_resources(kind)
        jobs = self.run_dir / ".ray-train"
        jobs.mkdir(exist_ok=True)
        name = f"{kind}-{stable_hash(task.name)[:12]}"
        output = jobs / f"{name}.pkl"
        output.unlink(missing_ok=True)
        trainer = TorchTrainer(
            _train_job_worker, train_loop_config={"task": task, "inputs": inputs, "output": str(output)},
            scaling_config=ScalingConfig(num_workers=self.jobs[kind].workers, use_gpu="GPU" in resources,
                                         resources_per_worker=resources),
            run_config=RunConfig(storage_path=str(jobs), name=name))
        trainer.fit()
        status, value = pickle.loads(output.read_bytes())
        output.unlink()
        if status == "raised":
            raise value
        return value

    def close(self, cancel: bool) -> None:
        if cancel:
            for ref in self.pending:
                self.ray.cancel(ref, force=True)
        self.job_threads.shutdown(wait=not cancel, cancel_futures=cancel)
        if self.started_here:
            self.ray.shutdown()


def _train_job_worker(config: dict[str, Any]) -> None:
    """One worker of a stage's Ray Train job: the stage as one process of a launch (Ray Train has joined the
    process group and set RANK and WORLD_SIZE, which undo.core.distributed reads). The first worker hands back
    the output, or the task's own expected error (a skip, a user error's one line)."""
    import ray.train

    try:
        result = ("ok", config["task"].run(config["inputs"]))
    except (SkipTask, NotComputed, UserError) as expected:
        result = ("raised", expected)
    if ray.train.get_context().get_world_rank() == 0:
        Path(config["output"]).write_bytes(pickle.dumps(result))


def _run_captured(task: Task, inputs: dict[str, Any]) -> tuple[str, Any]:
    """Run a task in a Ray worker. Expected outcomes come back as values, so that the driver re-raises the task's
    own exception (a skip, or a user error's one line), not Ray's wrapper of it."""
    try:
        return "ok", task.run(inputs)
    except (SkipTask, NotComputed, UserError) as expected:
        return "raised", expected


def _sees(path: str) -> bool:
    return Path(path).is_file()


def execute(plan: Plan, executor: Executor, on_change: Callable[[dict[str, Any], dict[str, str], set[str]], None]
            ) -> dict[str, Any]:
    """Run every task once its inputs are settled, in plan order among those ready. A task whose input made nothing
    is skipped with that input's reason; `on_change(outputs, skipped, pending)` is called after every settled task
    (the manifest). `pending` holds the tasks not computed yet in a dry run, and everything that needs them."""
    outputs: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    pending: set[str] = set()
    numbers = {task.name: number for number, task in enumerate(plan.tasks, 1)}
    total = len(plan.tasks)
    started = time.perf_counter()

    def settle(task: Task, future: Future) -> None:
        try:
            outputs[task.name] = future.result()
        except (SkipTask, NotComputed) as reason:
            outputs[task.name], skipped[task.name] = None, str(reason)
            if isinstance(reason, NotComputed):
                pending.add(task.name)
            console.print(f"[yellow]nothing made[/] ({task.name}): {reason}")
        on_change(outputs, skipped, pending)

    def skip_if_input_missing(task: Task) -> bool:
        missing = [n for n in task.needs if outputs.get(n) is None]
        if not missing:
            return False
        skipped[task.name] = skipped.get(missing[0]) or f"{missing[0]} produced nothing"
        if pending & set(missing):
            pending.add(task.name)
        outputs[task.name] = None
        console.print(f"[yellow]({numbers[task.name]}/{total}) skip {task.name}[/]: {skipped[task.name]}")
        on_change(outputs, skipped, pending)
        return True

    waiting = list(plan.tasks)
    running: dict[Future, Task] = {}
    try:
        while waiting or running:
            interrupts.stop_if_requested()
            progressed = True
            while progressed:  # plan order among the ready; a settled or skipped task may make more ready
                progressed = False
                for task in list(waiting):
                    if any(n not in outputs for n in task.needs):
                        continue
                    waiting.remove(task)
                    progressed = True
                    if skip_if_input_missing(task):
                        continue
                    console.print(f"[bold]({numbers[task.name]}/{total}) {task.name}[/]")
                    future = executor.submit(task, task.inputs_from(outputs))
                    if future.done():
                        settle(task, future)
                    else:
                        running[future] = task
            assert running or not waiting, "a task waits on inputs nothing will produce"  # a plan bug
            if running:
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    task = running.pop(future)
                    console.print(f"[bold]({numbers[task.name]}/{total}) done: {task.name}[/]")
                    settle(task, future)
    except BaseException:
        executor.close(cancel=True)
        raise
    executor.close(cancel=False)
    console.print(f"[green]study done[/] in {time.perf_counter() - started:.0f}s")
    return outputs
