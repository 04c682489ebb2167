"""train(cfg): the three ORCA stages for one (task, body, method, seed), with its record.

1. embed: build embedder (task input -> tokens), body and head;
2. align: train the embedder alone to minimise a dataset distance to the source data;
3. refine: fine-tune on the task, select on validation, test the selected weights once.

Each finished stage leaves a checkpoint in ``<run>/checkpoints``; a run restarted in the
same folder skips the stages that finished. A folder that holds a finished run's
``results.json`` is refused, so nothing is overwritten; so is a folder a live run holds
(orca/lock.py: one writer a folder).
"""
from __future__ import annotations

import copy
import inspect
import json
import logging
import re
import statistics
import time
from contextlib import nullcontext
from datetime import timedelta
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, Dataset

from orca.adapters import add_peft
from orca.align.sources import choose_source, load_source
from orca.bodies import load_body
from orca.budget import PlanCheck, StepPlan, calibrate, check_plan, check_step, fixed_plan, plan_steps
from orca.choices import LOOPS, SELECT_ON
from orca.classical import fit_classical
from orca.embedders import default_embedder
from orca.errors import ConfigError
from orca.lock import RunLock
from orca.loggers import log_record, stage_logger
from orca.methods import MethodConfig
from orca.model import OrcaModel, architecture, build_model
from orca.plan_cache import cached_plan, keep_plan, worth_keeping
from orca.preflight import check_run_folder
from orca.record import RECORD_NAME, StageTimer, machine, package_versions, peak_rss_mb, summary, write_record
from orca.registry import DISTANCES, EMBEDDERS, HEADS, import_plugin
from orca.resume import EpochSampler, ExactResume, SaveTimes
from orca.stages import AlignStage, ClassBatchSampler, FinetuneStage, LinearProbeFirst, OrcaLoop
from orca.tasks import Task, create_task, inputs_of, labels_of

log = logging.getLogger(__name__)


REFERENCE_LABEL = "reference protocol: selected on test, as ORCA's code does"


def node_options(node: DictConfig, drop: tuple[str, ...] = ("name",)) -> dict:
    return {k: v for k, v in OmegaConf.to_container(node, resolve=True).items() if k not in drop}


def _trainer(cfg: DictConfig, run_dir: Path, stage: str, **kwargs) -> L.Trainer:
    logger = stage_logger(cfg, run_dir, stage)  # logger=csv: <run>/logs/<stage> (orca/loggers.py)
    try:
        return L.Trainer(logger=logger, num_sanity_val_steps=0,
                         enable_model_summary=False, **node_options(cfg.trainer, drop=()), **kwargs)
    except (MisconfigurationException, ValueError, TypeError) as exc:  # Lightning's word on trainer.* options
        raise ConfigError(f"the trainer options do not work: {exc}; check trainer.* "
                          "(https://lightning.ai/docs/pytorch/stable/common/trainer.html)") from None


def _subset(n: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[: min(n, size)]


class _WithLabels(Dataset):
    """(input, align label) pairs of a split."""

    def __init__(self, split, labels: torch.Tensor):
        self.split, self.labels = split, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        return self.split[i][0], self.labels[i]


def reuse_align(run: str, embedder, arch: dict) -> dict:
    """Stage 2 taken from the finished run in folder `run`: its aligned embedder's weights
    into `embedder`, and its align record with ``from_run`` added. Several fine-tuning runs
    can so start from one alignment (the ingredients of a model soup, orca/merge.py)."""
    folder = Path(run)
    checkpoint, record_path = folder / "checkpoints" / "align.pt", folder / RECORD_NAME
    if not checkpoint.exists() or not record_path.exists():
        raise ConfigError(f"align.from_run={run}: no finished run with an align stage there ({checkpoint} and "
                          f"{record_path} are needed); give the folder of a finished method=orca run")
    theirs = json.loads(record_path.read_text())["model"]
    fields = {"task": lambda a: a["task"], "input shape": lambda a: a["input_shape"],
              "embedder": lambda a: a["embedder"], "body": lambda a: a["body"]["key"]}
    differ = [name for name, get in fields.items() if get(theirs) != get(arch)]
    if differ:
        raise ConfigError(f"align.from_run={run}: that run's {', '.join(differ)} differ from this run's; "
                          "its aligned embedder cannot start this model")
    state = torch.load(checkpoint, weights_only=True)
    embedder.load_state_dict(state["embedder"])
    log.info("align stage taken from %s", folder)
    return {**state["record"], "from_run": str(folder)}


@torch.no_grad()
def _pooled_features(embedder: torch.nn.Module, x: torch.Tensor, batch: int = 64) -> torch.Tensor:
    """(n, *input) -> (n, D) embedded tokens, mean-pooled."""
    return torch.cat([embedder(x[i : i + batch]).mean(1) for i in range(0, len(x), batch)])


def run_align(cfg: DictConfig, task: Task, train, loaded, embedder, run_dir: Path,
              timer: StageTimer) -> dict:
    """Stage 2. Returns the align record: the distance minimised, the OTDD before and after, source."""
    a = cfg.align
    ckpt = run_dir / "checkpoints" / "align.pt"
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=True)
        embedder.load_state_dict(state["embedder"])
        log.info("align stage already done (%s): skipped", ckpt)
        return state["record"]
    distance_type = DISTANCES.get(a.distance)  # an unknown name fails before any work
    source = choose_source(a.source, a.source_root, a.text_fallback, images=loaded.image_embeddings is not None)
    with timer.stage("source"):  # the same source sample (seed 0) for every run: cached once
        xs, ys, description = load_source(source, loaded, a.source_samples, a.seq_len, a.source_root,
                                          seed=0, cache_dir=cfg.paths.cache_dir, download=cfg.data.download,
                                          image_transform=a.image_transform)
    log.info("align source: %s", description)

    labels = task.align_labels(labels_of(train)[0])
    options = node_options(a.options, drop=())
    distance = distance_type(xs, ys, **options)
    # The reported distance is the OTDD whatever the align stage minimises (one scale for
    # every run), on a fixed subset of target and source, identical before and after.
    t_idx, s_idx = _subset(len(train), a.eval_samples), _subset(len(xs), a.eval_source_samples)
    evaluator = DISTANCES.get("otdd")(xs[s_idx], ys[s_idx], **(options if a.distance == "otdd" else {}))

    def measure() -> float:
        return float(evaluator(_pooled_features(embedder, inputs_of(train, t_idx)).double(), labels[t_idx]))

    with timer.stage("align"):
        L.seed_everything(cfg.seed, workers=True, verbose=False)  # the same stage whether or not it restarts
        before = measure()
        log.info("OTDD before alignment: %.4g", before)
        embedder.train()
        weights = torch.bincount(labels).float() / len(labels)
        module = AlignStage(embedder, distance, weights, lr=a.lr, milestones=a.milestones, gamma=a.gamma,
                            optimizer=node_options(a.optimizer, drop=()) if a.optimizer else None, schedule=a.schedule)
        sampler = ClassBatchSampler(labels, a.per_class, a.steps, seed=cfg.seed, batch=a.per_class_batch)
        loader = DataLoader(_WithLabels(train, labels), batch_sampler=sampler)
        if a.steps > 0:  # align.steps=0: the ablation's unaligned embedder, measured the same way
            _trainer(cfg, run_dir, "align", max_steps=a.steps, enable_checkpointing=False,
                     callbacks=[SaveTimes(timer.save)]).fit(module, loader)
        after = measure()
        log.info("OTDD after alignment: %.4g", after)
    seconds = module.distance_seconds  # the distance's share of each step (all classes)
    record = {"distance": a.distance, "reported": "otdd", "before": before, "after": after, "source": description,
              "eval_samples": len(t_idx), "eval_source_samples": len(s_idx), "steps": len(seconds),
              "per_class": sampler.per_class,
              "classes": len(weights), "distance_s_per_step": round(statistics.median(seconds), 4) if seconds else None}
    if _rank_zero():
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"embedder": embedder.state_dict(), "record": record}, ckpt)
    return record


def plan_finetune(cfg: DictConfig, module: FinetuneStage, train: DataLoader, splits, run_dir: Path,
                  timer: StageTimer) -> StepPlan | None:
    """How many steps to train and how often to validate: finetune.max_steps when given,
    else as many as fit in what is left of budget_s: the plan an earlier run of the same
    command on this machine kept (orca/plan_cache.py), or one calibrated now. The plan is
    kept in the run folder, so that a resumed run follows the one it started with (or the
    one its first steps re-planned); in a DDP run that an earlier stage started, rank
    zero's plan is every process's."""
    if not torch.distributed.is_initialized():
        return _make_plan(cfg, module, train, splits, run_dir, timer)
    return _from_rank_zero(_make_plan(cfg, module, train, splits, run_dir, timer) if _rank_zero() else None)


def _make_plan(cfg, module, train, splits, run_dir: Path, timer: StageTimer) -> StepPlan | None:
    f = cfg.finetune
    path = _plan_file(run_dir)
    if path.exists():
        return StepPlan.from_dict(json.loads(path.read_text()))
    if f.max_steps and f.max_steps > 0:
        plan = fixed_plan(f.max_steps, f.num_validations)
    elif cfg.get("budget_s"):
        plan = cached_plan(cfg)
        if plan is None:
            calibration = calibrate(module, train, f.accumulate_grad_batches,
                                    inputs_of(splits.val, slice(0, f.eval_batch_size)))
            plan = plan_steps(calibration, cfg.budget_s - timer.elapsed(), len(splits.val), len(splits.test),
                              f.num_validations)
        log.info("time budget: %.0f s left; %s plan: %d steps at %.4f s a step, validating every %d",
                 cfg.budget_s - timer.elapsed(), plan.source, plan.max_steps, plan.calibration.fit_step_s,
                 plan.val_every)
    else:
        return None  # epochs (budget=paper): the trainer's own options
    if _rank_zero():
        _save_plan(run_dir, plan)
    return plan


def _plan_file(run_dir: Path) -> Path:
    return run_dir / "checkpoints" / "finetune-plan.json"


def _save_plan(run_dir: Path, plan: StepPlan) -> None:
    path = _plan_file(run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(plan.to_dict(), indent=2))


def _plan_check(cfg: DictConfig, plan: StepPlan | None, splits, run_dir: Path, timer: StageTimer,
                resuming: bool) -> PlanCheck | None:
    """The check of a time-budgeted plan against the fit's first steps (orca/budget.py), or
    None: a fixed plan, a plan checked already (a resumed run follows its saved plan, even
    one re-planned), a resumed fit, or a plan too short to time. The plan the check settles
    on replaces the run folder's, and the cached one when it is worth keeping
    (orca/plan_cache.py)."""
    at_step = check_step(plan) if plan and plan.calibration and plan.check is None and not resuming else None
    if at_step is None:
        return None
    f = cfg.finetune

    def decide(step_s: float, step: int) -> StepPlan:
        return check_plan(plan, step_s, step, cfg.budget_s - timer.elapsed(), len(splits.val), len(splits.test),
                          f.num_validations)

    def keep(checked: StepPlan) -> None:
        log.info("the first %d steps took %.4f s a step against the plan's %.4f: %s", checked.check["at_step"],
                 checked.check["measured_step_s"], checked.check["planned_step_s"],
                 "plan confirmed" if checked.check["confirmed"] else
                 f"re-planned to {checked.max_steps} steps, trained again from the start")
        if not _rank_zero():
            return
        _save_plan(run_dir, checked)
        if worth_keeping(plan, checked):
            keep_plan(cfg, checked, run_dir)

    return PlanCheck(at_step, decide, keep)


def _rank_zero() -> bool:
    """Only the first process writes files (configs, checkpoints, plans, records)."""
    return rank_zero_only.rank == 0


def _from_rank_zero(value):
    """`value` as rank zero has it, on every process (a DDP run started by an earlier stage)."""
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def run_finetune(cfg: DictConfig, task: Task, splits, model: OrcaModel, run_dir: Path, timer: StageTimer,
                 probe_frac: float = 0.0, adapter_lr: float | None = None):
    """Stage 3. Returns val metrics of the selected weights, their test metrics, their
    checkpoint, and what the stage did (steps planned and done, seconds a step). With
    `probe_frac`, the body stays frozen for that share of the steps first (LP-FT);
    `adapter_lr` is the adapters' learning rate (None: finetune.new_lr)."""
    f = cfg.finetune
    val = DataLoader(splits.val, batch_size=f.eval_batch_size)  # every process sees whole splits: exact metrics
    test = DataLoader(splits.test, batch_size=f.eval_batch_size)
    if f.loop not in LOOPS:
        raise ConfigError(f"finetune.loop={f.loop!r}; known: {', '.join(LOOPS)}")
    lightning_loop = f.loop == "lightning"  # else ORCA's: it accumulates and clips itself (OrcaLoop)
    module = FinetuneStage(model, task, optimizer=f.optimizer, warmup_frac=f.warmup_frac, new_lr=f.new_lr,
                           unfreezes_body=probe_frac > 0, adapter_lr=adapter_lr)
    ckpt_dir = run_dir / "checkpoints" / "finetune"
    with timer.stage("calibrate"):
        plan = plan_finetune(cfg, module, DataLoader(splits.train, batch_size=f.batch_size, shuffle=True,
                                                     generator=torch.Generator().manual_seed(cfg.seed + 1)),
                             splits, run_dir, timer)

    def fit(plan: StepPlan | None, check: PlanCheck | None):
        """One fit of `module` that follows `plan`, from its own trainer, data order and seed
        (or from the run folder's last checkpoint)."""
        order = EpochSampler(len(splits.train), f.batch_size, seed=cfg.seed)  # resumable: orca/resume.py
        best = ModelCheckpoint(dirpath=ckpt_dir, filename="best-{step}", monitor="val/error", mode="min",
                               save_top_k=1, save_last=True)
        schedule = dict(max_steps=f.max_steps, max_epochs=f.max_epochs, val_check_interval=f.val_check_interval,
                        check_val_every_n_epoch=f.check_val_every_n_epoch)
        if plan is not None:
            schedule = dict(max_steps=plan.max_steps, max_epochs=None, check_val_every_n_epoch=None,
                            val_check_interval=plan.val_every * f.accumulate_grad_batches)
            if plan.seconds_left is not None and f.stop_on_time:  # if this machine turns slower than planned
                schedule["max_time"] = timedelta(seconds=max(1.0, cfg.budget_s - timer.elapsed() - 10))
        resume = ExactResume(order)
        callbacks = [best, resume, SaveTimes(timer.save)] + ([LinearProbeFirst(model.body, probe_frac)] if probe_frac
                                                             else []) + ([check] if check else [])
        if f.early_stopping_patience:  # counted in validations, whatever their interval
            callbacks.append(EarlyStopping(monitor="val/error", mode="min", patience=f.early_stopping_patience,
                                           check_on_train_epoch_end=False))
        trainer = _trainer(cfg, run_dir, "finetune", callbacks=callbacks,
                           accumulate_grad_batches=f.accumulate_grad_batches if lightning_loop else 1,
                           gradient_clip_val=f.gradient_clip_val if lightning_loop else None, **schedule)
        if f.batch_size % trainer.world_size:
            raise ConfigError(f"finetune.batch_size={f.batch_size} does not split over {trainer.world_size} "
                              f"processes; make it a multiple of {trainer.world_size}")
        order.shard(trainer.global_rank, trainer.world_size)  # DDP: each process its share of each batch
        if not lightning_loop:
            module.use_loop(OrcaLoop(f.accumulate_grad_batches, order.batches_per_epoch(), f.warmup_epochs,
                                     f.decay_epochs, clip=f.gradient_clip_val))
        # A loader draws a seed from its generator each time it starts a pass; its own generator
        # keeps torch's global one (augmentation, dropout) where ExactResume restored it.
        train = DataLoader(splits.train, batch_size=f.batch_size // trainer.world_size, sampler=order,
                           generator=torch.Generator().manual_seed(cfg.seed))
        last = ckpt_dir / "last.ckpt"
        t0 = time.perf_counter()
        L.seed_everything(cfg.seed, workers=True, verbose=False)  # dropout; a resume restores the saved state
        trainer.fit(module, train, val, ckpt_path=last if last.exists() else None)
        return trainer, best, resume, time.perf_counter() - t0

    check = _plan_check(cfg, plan, splits, run_dir, timer, resuming=(ckpt_dir / "last.ckpt").exists())
    start = copy.deepcopy(module.state_dict()) if check else None  # a re-planned fit starts again from these
    with timer.stage("finetune"):
        trainer, best, resume, fit_s = fit(plan, check)
        if check and check.plan:
            plan = check.plan
        if check and check.replanned:  # stopped before any validation: the new plan's fit, from the start
            module.load_state_dict(start)
            trainer, best, resume, fit_s = fit(plan, None)
    early = early_stop_record(trainer, int(trainer.global_step))
    if plan and plan.seconds_left is not None and trainer.global_step < plan.max_steps and not early:
        log.warning("stopped at the deadline (budget_s=%s) after %d of the %d planned steps", cfg.budget_s,
                    trainer.global_step, plan.max_steps)
    if not best.best_model_path:
        raise ConfigError("no validation ran during fine-tuning: make finetune.val_check_interval <= max_steps")
    with timer.stage("test"):
        val_metrics = trainer.validate(module, val, ckpt_path=best.best_model_path, verbose=False)[0]
        test_metrics = trainer.test(module, test, ckpt_path=best.best_model_path, verbose=False)[0]
    if _rank_zero():  # what python -m orca.predict gives for the same inputs
        (run_dir / "predictions").mkdir(exist_ok=True)
        np.save(run_dir / "predictions" / "test.npy", torch.cat(module.test_predictions).numpy())
    steps = int(trainer.global_step)
    stage_record = {"steps_done": steps, "steps_planned": plan.max_steps if plan else None,
                    "stopped_on_time": bool(plan and steps < plan.max_steps and not early),
                    "stopped_early": early,
                    "seconds_per_step": round(fit_s / max(1, steps - resume.start_step), 4),  # this attempt's
                    "selected_step": _step_of(best.best_model_path), "plan": plan.to_dict() if plan else None}
    return _unprefix(val_metrics, "val/"), _unprefix(test_metrics, "test/"), best.best_model_path, stage_record


def early_stop_record(trainer: L.Trainer, steps: int) -> dict | None:
    """When and why early stopping ended fine-tuning (None if it did not)."""
    stopper = trainer.early_stopping_callback
    if stopper is None or stopper.wait_count < stopper.patience:
        return None
    log.info("stopped early at step %d: val/error has not improved on %.4g for %d validations", steps,
             float(stopper.best_score), stopper.patience)
    return {"step": steps, "patience": stopper.patience, "best_val_error": float(stopper.best_score),
            "reason": f"val/error did not improve for {stopper.patience} validations in a row"}


def _step_of(checkpoint: str) -> int | None:
    match = re.search(r"step=(\d+)", Path(checkpoint).name)
    return int(match.group(1)) if match else None


@torch.no_grad()
def check_output_shape(task: Task, model: OrcaModel, train) -> None:
    """Run two real samples through the model before any training; the outputs must match
    the targets ((2, K) logits for classes)."""
    x, y = inputs_of(train, slice(0, 2)), labels_of(train)[0][:2]
    out = model(x)
    expected = (len(x), task.num_outputs) if task.output_kind == "classes" else tuple(y.shape)
    if tuple(out.shape) != expected:
        raise ConfigError(f"the model outputs {tuple(out.shape)} for 2 samples of task {task.name!r}, which "
                          f"needs {expected}; check head.name (pooled for classes and labels, dense for fields)")


def choose_embedder(configured: str, method: MethodConfig, vision_body: bool = False) -> str:
    """The configured embedder (the task's, a body's or the user's), or the method's own (FPT's
    linear patch layer) in place of one of ours. An embedder named on the command line, or
    brought by a plugin, is never replaced: it may do work the method's would skip (a
    spectrogram, say), so the method uses it, and the log says so. Nor is a vision body's
    own (a Swin needs its 56 x 56 patch grid, which a linear patch layer cannot give)."""
    if not method.embedder or method.embedder == configured:
        return configured
    if vision_body:
        log.warning("method %s keeps the vision body's embedder %r in place of its own %r", method.name,
                    configured, method.embedder)
        return configured
    if _named_on_command_line("embedder") or not EMBEDDERS.is_builtin(configured):
        log.warning("method %s uses embedder %r (named on the command line or brought by a plugin) in place of "
                    "its own %r", method.name, configured, method.embedder)
        return configured
    return method.embedder


def _named_on_command_line(group: str) -> bool:
    """Whether this Hydra run's overrides set `group` (group=... or group.name=...)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():  # train(cfg) called from Python: the cfg is the user's word
        return False
    keys = {o.split("=", 1)[0].lstrip("+~") for o in HydraConfig.get().overrides.task}
    return bool(keys & {group, f"{group}.name"})


def _unprefix(metrics: dict, prefix: str) -> dict[str, float]:
    return {k.removeprefix(prefix): float(v) for k, v in metrics.items()}


# Options that a budget, protocol or tuned recipe sets for every embedder or head, and that
# only some take: one that does not take it gets the rest (conv1d and patch2d have a stem;
# conv1d and swin_patch an `init`; the dense head a `decoder`).
SHARED_OPTIONS = {"embedder": ("stem", "stem_kernel", "init"), "head": ("decoder", "upsample")}


def _options_for(factory, options: dict, kind: str, name: str) -> dict:
    """`options` less the SHARED_OPTIONS of `kind` that `factory` does not take (logged if set)
    and those left null (the component's own default)."""
    takes = inspect.signature(factory).parameters
    kept = dict(options)
    for key in SHARED_OPTIONS[kind]:
        if key in kept and (key not in takes or kept[key] is None):
            value = kept.pop(key)
            if value is not None:
                log.info("%s %r has no option %r: %s.%s=%s is not used", kind, name, key, kind, key, value)
    return kept


def model_architecture(cfg: DictConfig, task: Task, loaded, method: MethodConfig) -> tuple[str, dict]:
    """The embedder's name and the model's architecture (orca/model.py) that this config
    builds around `loaded`: the task's (or the method's) embedder with its options, and the
    head. ORCA's dense decoder (head.decoder=pixel_shuffle) upsamples by the body's own
    encoder stride where it has one (Swin: 32, as SwinForMaskedImageModeling)."""
    configured = cfg.embedder.name
    if configured is None:  # a task from outside that names no embedder
        configured = default_embedder(task.name, task.input_shape)
        log.info("task %s names no embedder: %s, the default for its %d-dimensional inputs", task.name, configured,
                 len(task.input_shape) - 1)
    embedder_name = choose_embedder(configured, method, vision_body=loaded.image_embeddings is not None)
    embedder_options = _options_for(EMBEDDERS.get(embedder_name), node_options(cfg.embedder), "embedder",
                                    embedder_name)
    head_options = _options_for(HEADS.get(cfg.head.name), node_options(cfg.head), "head", cfg.head.name)
    if method.head_pool and "pool" in head_options:
        head_options["pool"] = method.head_pool
    if head_options.get("decoder") == "pixel_shuffle" and head_options.get("upsample") is None:
        stride = getattr(loaded.body.model.config, "encoder_stride", None)
        if stride:
            head_options["upsample"] = int(stride)
    return embedder_name, architecture(task, loaded, (embedder_name, embedder_options), (cfg.head.name, head_options))


def _run_transformer(cfg: DictConfig, task: Task, splits, method: MethodConfig, run_dir: Path,
                     timer: StageTimer) -> dict:
    """Stages 1-3 for embedder -> body -> head; returns the record's parts: val and test
    metrics, the align and fine-tune records, parameter counts, the selected checkpoint and
    the model's architecture."""
    with timer.stage("embed"):  # stage 1: build embedder, body, head
        loaded = load_body(cfg.body.name, cfg.body.path, pretrained=method.pretrained)
        embedder_name, arch = model_architecture(cfg, task, loaded, method)
        model = build_model(loaded, arch)
        embedder = model.embedder
        check_output_shape(task, model, splits.train)

    align_record = None
    if method.align and cfg.align.distance != "none":
        if cfg.align.from_run:
            align_record = reuse_align(cfg.align.from_run, embedder, arch)
        else:
            align_record = run_align(cfg, task, splits.train, loaded, embedder, run_dir, timer)

    model.train()  # Hugging Face loads bodies in eval mode
    model.set_trainable(method.trainable, method.train_last_k)
    if method.peft:  # after alignment, which never touches the body
        add_peft(loaded, dict(method.peft))
        arch["peft"] = dict(method.peft)
    val_metrics, test_metrics, best_path, finetune_record = run_finetune(cfg, task, splits, model, run_dir, timer,
                                                                         probe_frac=method.probe_frac,
                                                                         adapter_lr=(method.peft or {}).get("lr"))
    finetune_record["token_grid"] = list(embedder.grid)
    finetune_record["embedder"] = embedder_name
    return {"val": val_metrics, "test": test_metrics, "align": align_record, "finetune": finetune_record,
            "params": model.parameter_counts(), "checkpoint": str(best_path), "model": arch}


def train(cfg: DictConfig) -> dict:
    """Run one experiment end to end; returns its record (also written to results.json). The
    process that starts the run holds its folder's lock throughout (orca/lock.py); DDP workers
    run under their rank zero's."""
    run_dir = Path(cfg.paths.run_dir)
    check_run_folder(run_dir, cfg)  # finished, held by a live run, read-only, or another configuration's checkpoints
    run_dir.mkdir(parents=True, exist_ok=True)
    with RunLock(run_dir) if _rank_zero() else nullcontext():  # released at the end, on an error too
        check_run_folder(run_dir, cfg)  # again, holding the lock: a run that finished meanwhile is not redone
        return _train_in(cfg, run_dir)


def _train_in(cfg: DictConfig, run_dir: Path) -> dict:
    if _rank_zero() and not (run_dir / "checkpoints").exists():  # else the same configuration's, kept as it was
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    for module in cfg.get("plugins") or []:  # the user's own components register on import
        import_plugin(module)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    timer = StageTimer(run_dir / "checkpoints" / "time.json" if _rank_zero() else None)  # summed over attempts
    timer.save()  # this attempt counts from its start
    method = MethodConfig(**node_options(cfg.method, drop=()))

    with timer.stage("data"):
        task = create_task(cfg.task.name, **node_options(cfg.task))
        splits = task.load(cfg.data.root, download=cfg.data.download,
                           max_samples=node_options(cfg.data.max_samples, drop=()), seed=cfg.data.subset_seed,
                           orca_data=cfg.protocol.data == "orca", train_fraction=cfg.data.train_fraction)
    if cfg.protocol.select_on == "val" and not len(splits.val):
        raise ConfigError(f"task {task.name!r} has no validation split under protocol.data={cfg.protocol.data} "
                          "(ORCA's `valid_split: False`); select on test with protocol=reference, or use our "
                          "splits with protocol.data=ours")
    log.info("task %s: %s samples (train/val/test), input %s", task.name, splits.sizes(), task.input_shape)
    if cfg.protocol.select_on not in SELECT_ON:
        raise ConfigError(f"protocol.select_on={cfg.protocol.select_on!r}; known: {', '.join(SELECT_ON)}")
    if cfg.protocol.select_on == "test":
        splits = splits.selected_on_test()
        log.warning("%s: training on train + validation (%d samples), the model selected on test",
                    REFERENCE_LABEL, len(splits.train))

    classical = method.model == "classical"
    if classical:
        with timer.stage("fit"):
            val_metrics, test_metrics, classical_record, params = fit_classical(task, splits, seed=cfg.seed)
        parts = {"val": val_metrics, "test": test_metrics, "classical": classical_record, "params": params}
    else:
        parts = _run_transformer(cfg, task, splits, method, run_dir, timer)
    record = {
        "task": task.name, "method": method.name, "body": None if classical else cfg.body.name, "seed": int(cfg.seed),
        "budget": cfg.budget_name,
        "protocol": {"name": cfg.protocol.name, "select_on": cfg.protocol.select_on, "data": cfg.protocol.data,
                     "note": REFERENCE_LABEL if cfg.protocol.select_on == "test" else None},
        "metrics": {"val": parts["val"], "test": parts["test"]},
        "error_name": task.error_name, "reference_error_name": task.reference_error_name, "paper": task.paper,
        "align": parts.get("align"), "finetune": parts.get("finetune"), "classical": parts.get("classical"),
        "time_s": timer.totals(), "attempts": timer.attempts, "peak_rss_mb": round(peak_rss_mb(), 1),
        "peak_rss_mb_by_stage": timer.peak_rss_mb,
        "data_sizes": splits.sizes(), "params": parts["params"],
        "checkpoint": parts.get("checkpoint"), "versions": package_versions(), "machine": machine(),
        "model": parts.get("model"),  # the architecture: orca/model.py, orca/export.py
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    if _rank_zero():
        write_record(run_dir, record)
        log_record(cfg, run_dir, record)  # the tracker's final metrics (logger=mlflow, ...)
        print("\n" + summary(record))
    return record
