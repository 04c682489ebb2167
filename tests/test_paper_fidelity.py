"""`budget=paper protocol=reference` against ORCA's released code (github sjunhongshen/ORCA
at HEAD, commit 19b8c1c), value by value: every task's composed config against ORCA's own
config file, and ORCA's training loop (src/main.py: train_one_epoch) written out in plain
PyTorch against ours on a tiny model."""
import copy
import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from orca.embedders import smallest_stride
from orca.stages import ClassBatchSampler, FinetuneStage, OrcaLoop, step_decay

# ORCA's values per task, from src/configs/<file> (hyperparameters:) unless said otherwise:
# optimizer.name/params, batch_size, accum, epochs, clip (-1: none), scheduler (WarmupLR)
# warmup_epochs and decay_epochs, embedder_epochs, maxsamples, target_seq_len (1D; 512 when
# absent, src/task_configs.py: get_config), embedder_dataset (text: CoNLL-2003 features,
# src/data_loaders.py: load_text; CIFAR10 for Swin), weight (roberta: RoBERTa-base,
# src/embedder.py: wrapper1D; base: swin-base-patch4-window7-224-in22k, wrapper2D).
ORCA = {
    "cifar100": dict(file="cifar100.yaml", body="swin-base", opt=("sgd", 1e-4, 1e-3, 0.9), batch=32, accum=32,
                     epochs=60, clip=None, warmup=5, decay=200, align_epochs=60, maxsamples=128, source="cifar10"),
    "spherical": dict(file="spherical.yaml", body="swin-base", opt=("adamw", 1e-4, 0.1, None), batch=32, accum=4,
                      epochs=60, clip=None, warmup=5, decay=60, align_epochs=60, maxsamples=128, source="cifar10"),
    "darcy": dict(file="darcy.yaml", body="swin-base", opt=("adamw", 1e-3, 5e-3, None), batch=4, accum=1,
                  epochs=100, clip=None, warmup=5, decay=100, align_epochs=60, maxsamples=128, source="cifar10"),
    "psicov": dict(file="psicov.yaml", body="swin-base", opt=("adam", 5e-6, 1e-5, None), batch=1, accum=32,
                   epochs=10, clip=None, warmup=5, decay=100, align_epochs=60, maxsamples=64, source="cifar10"),
    "cosmic": dict(file="cosmic.yaml", body="swin-base", opt=("adamw", 1e-3, 0.0, None), batch=4, accum=1,
                   epochs=60, clip=None, warmup=5, decay=60, align_epochs=60, maxsamples=128, source="cifar10"),
    "ninapro": dict(file="ninapro.yaml", body="swin-base", opt=("adam", 1e-4, 1e-5, None), batch=32, accum=1,
                    epochs=60, clip=1.0, warmup=5, decay=60, align_epochs=100, maxsamples=128, source="cifar10"),
    "fsd50k": dict(file="fsd.yaml", body="swin-base", opt=("adam", 1e-4, 5e-5, None), batch=32, accum=1,
                   epochs=100, clip=None, warmup=5, decay=100, align_epochs=60, maxsamples=128, source="cifar10"),
    "ecg": dict(file="ecg.yaml", body="roberta-base", opt=("sgd", 1e-6, 0.1, 0.99), batch=4, accum=16, epochs=15,
                clip=None, warmup=5, decay=200, align_epochs=60, maxsamples=128, source="conll2003", seq_len=64,
                length=1000, tokens=50),
    "satellite": dict(file="satellite.yaml", body="roberta-base", opt=("adamw", 3e-5, 3e-6, None), batch=16,
                      accum=4, epochs=60, clip=None, warmup=5, decay=60, align_epochs=60, maxsamples=128,
                      source="conll2003", seq_len=512, length=46, tokens=46),
    "deepsea": dict(file="deepsea.yaml", body="roberta-base", opt=("adam", 1e-5, 0.0, None), batch=16, accum=1,
                    epochs=13, clip=1.0, warmup=10, decay=25, align_epochs=60, maxsamples=64, source="conll2003",
                    seq_len=512, length=1000, tokens=500),
}
BETAS = [0.9, 0.98]  # every task's optimizer.params.betas (Adam and AdamW)


@pytest.fixture(scope="module")
def compose_paper():
    from hydra import compose, initialize_config_dir

    from tests.conftest import ROOT

    def make(task):
        with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
            return compose("train", overrides=[f"task={task}", "budget=paper", "protocol=reference"])

    return make


@pytest.mark.parametrize("task", sorted(ORCA))
def test_paper_reference_config_is_orcas(compose_paper, task):
    orca, cfg = ORCA[task], compose_paper(task)
    f, a = cfg.finetune, cfg.align
    name, lr, wd, momentum = orca["opt"]
    # the body and its tokens
    assert cfg.body.name == orca["body"]
    if orca["body"] == "swin-base":  # Embeddings2D: resize to 224, 4x4 patches -> 56 x 56 tokens
        assert cfg.embedder.name == "swin_patch" and cfg.embedder.init == "orca"
    else:  # Embeddings1D.get_stack_num: the smallest divisor of the length within target_seq_len
        assert cfg.embedder.name == "conv1d" and cfg.embedder.init == "orca"
        assert orca["length"] // smallest_stride(orca["length"], cfg.embedder.target_len) == orca["tokens"]
        assert cfg.embedder.target_len == orca["seq_len"]
    # fine-tuning: optimiser, batch, accumulation, epochs, clipping, schedule, selection
    assert (f.optimizer.name, f.optimizer.lr, f.optimizer.weight_decay) == (name, lr, wd)
    assert f.new_lr is None  # one learning rate for every parameter, as get_optimizer_scheduler
    if name == "sgd":
        assert f.optimizer.momentum == momentum
    else:
        assert list(f.optimizer.betas) == BETAS
    assert (f.batch_size, f.accumulate_grad_batches, f.max_epochs) == (orca["batch"], orca["accum"], orca["epochs"])
    assert f.gradient_clip_val == orca["clip"]
    assert (f.loop, f.warmup_epochs, f.decay_epochs) == ("orca", orca["warmup"], orca["decay"])
    assert cfg.protocol.select_on == "test"  # valid_split: False
    # alignment: epochs, samples a class, the task's optimiser at 10x a rate <= 1e-3, StepLR
    assert a.distance == "otdd" and a.options.inner == "exact" and a.options.eps == 0.1 and a.options.debiased
    assert a.steps == orca["align_epochs"]
    assert a.lr == pytest.approx(lr * 10 if lr <= 1e-3 else lr)
    assert (a.optimizer.name, a.optimizer.weight_decay) == (name, wd)
    assert (a.schedule, list(a.milestones), a.gamma) == ("orca", [20, 40, 60], 0.2)  # no_warmup_scheduler
    assert (a.per_class, a.per_class_batch) == (orca["maxsamples"], orca["batch"])
    assert a.source_samples == 5000  # get_data(..., maxsize=5000)
    assert a.source == "auto" and a.text_fallback is False  # text bodies: CoNLL-2003; Swin: CIFAR-10 images
    assert a.image_transform == "orca"  # data_loaders.py: load_cifar's crop, flip and CIFAR-10 statistics
    assert cfg.method.name == "orca" and cfg.method.trainable == "all"  # finetune_method: all


def orca_focal(output, target, alpha=1.0, gamma=0.0, classes=18):
    """src/utils.py: FocalLoss (NinaPro: FocalLoss(alpha=1), gamma 0)."""
    onehot = torch.eye(classes)[target]
    probs = torch.softmax(output, dim=1) + 1e-9
    return (alpha * onehot * (1 - probs) ** gamma * onehot * -torch.log(probs)).sum(1).mean()


# src/task_configs.py: get_config's loss per task; Darcy, PSICOV and Cosmic differ (README:
# "Where we differ from ORCA's code"): summed relative L2, MSE over the whole map, BCE on masked logits.
ORCA_LOSSES = {
    "cifar100": lambda out, y: nn.functional.cross_entropy(out, y),
    "spherical": lambda out, y: nn.functional.cross_entropy(out, y),
    "ecg": lambda out, y: nn.functional.cross_entropy(out, y),
    "satellite": lambda out, y: nn.functional.cross_entropy(out, y),
    "ninapro": orca_focal,
    "deepsea": lambda out, y: nn.functional.binary_cross_entropy_with_logits(out, y, pos_weight=4 * torch.ones(36)),
    "fsd50k": lambda out, y: nn.functional.binary_cross_entropy_with_logits(out, y, pos_weight=10 * torch.ones(200)),
}


@pytest.mark.parametrize("task", sorted(ORCA_LOSSES))
def test_task_losses_are_orcas(task):
    from orca.tasks import create_task

    ours = create_task(task)
    torch.manual_seed(0)
    out = 3 * torch.randn(16, ours.num_outputs)
    if ours.output_kind == "classes":
        y = torch.randint(0, ours.num_outputs, (16,))
    else:
        y = torch.randint(0, 2, (16, ours.num_outputs)).float()
    assert ours.loss(out, y).item() == pytest.approx(ORCA_LOSSES[task](out, y).item(), rel=1e-5)


def test_alignment_samples_a_class_as_orcas_batches_do():
    """get_tgt_model: a class's loader batches until more than maxsamples have been taken."""
    labels = torch.tensor([0] * 500 + [1] * 20)
    for batch, maxsamples in [(4, 128), (1, 64), (16, 64), (32, 128), (16, 128)]:
        taken, count = 0, 0
        while taken <= maxsamples:  # ORCA's loop over one class's batches
            taken += batch
            count += 1
        sampler = ClassBatchSampler(labels, maxsamples, steps=1, seed=0, batch=batch)
        sizes = torch.bincount(labels[next(iter(sampler))])
        assert sizes.tolist() == [count * batch, 20], (batch, maxsamples)


def test_align_schedule_is_orcas_step_lambda():
    """src/task_configs.py: get_scheduler("StepLR"): base ** (milestones the epoch is past)."""
    sched, base = [20, 40, 60], 0.2

    def orca_lambda(epoch):
        factor = 0
        for i in range(len(sched)):
            if epoch > sched[len(sched) - 1 - i]:
                factor = len(sched) - i
                break
        return math.pow(base, factor)

    ours = step_decay(sched, base, "orca")
    assert [ours(e) for e in range(100)] == pytest.approx([orca_lambda(e) for e in range(100)])
    assert step_decay(sched, base, "multistep")(20) == pytest.approx(0.2)  # torch's MultiStepLR: from step 20


def orca_warmup_lambda(warmup_epochs, decay_epochs, n_train):
    """src/task_configs.py: get_scheduler("WarmupLR")."""
    warmup_steps, total_steps = int(warmup_epochs * n_train), int(decay_epochs * n_train)

    def scheduler(step):
        if warmup_steps > 0 and step < warmup_steps:
            return float(step) / float(max(1.0, warmup_steps))
        return (total_steps - step) / (total_steps - warmup_steps)

    return scheduler


def test_reference_loop_refuses_an_epoch_shorter_than_the_accumulation():
    from orca.errors import ConfigError

    with pytest.raises(ConfigError, match="would never step"):
        OrcaLoop(accumulate=4, batches_per_epoch=3, warmup_epochs=1, decay_epochs=3)


def test_finetune_schedule_is_orcas_warmup_lambda():
    for warmup, decay, n in [(5, 200, 7), (10, 25, 13), (5, 60, 1), (0, 3, 4)]:
        ours, theirs = OrcaLoop(1, n, warmup, decay).lr_factor, orca_warmup_lambda(warmup, decay, n)
        assert [ours(i) for i in range(decay * n + 5)] == pytest.approx([theirs(i) for i in range(decay * n + 5)])
    # CIFAR-100 ends at 0.72 of its peak rate, DeepSEA at 0.8 (60 of 200 and 13 of 25 epochs)
    assert OrcaLoop(32, 100, 5, 200).lr_factor(60 * 100) == pytest.approx(140 / 195)
    assert OrcaLoop(1, 100, 10, 25).lr_factor(13 * 100) == pytest.approx(0.8)


class _Tiny(nn.Module):
    """A classifier with the parameter groups FinetuneStage asks for."""

    def __init__(self):
        super().__init__()
        self.body, self.head = nn.Linear(6, 8), nn.Linear(8, 3)

    def forward(self, x):
        return self.head(torch.tanh(self.body(x)))

    def parameter_groups(self):
        return {"pretrained": list(self.body.parameters()), "new": list(self.head.parameters()), "adapters": []}


class _Task:
    """The task contract's training half: cross-entropy, no augmentation, no extras."""

    def metrics(self):
        import torchmetrics

        return torchmetrics.MetricCollection({"accuracy": torchmetrics.Accuracy("multiclass", num_classes=3)})

    def augment(self, x, **extras):
        return x

    def augment_eval(self, x, **extras):
        return x

    def extras(self, rest):
        return {}

    def loss(self, outputs, targets, mask=None):
        return nn.functional.cross_entropy(outputs, targets)


def orca_train(model, loader, epochs, accum, clip, opt_options, warmup, decay, average=False):
    """src/main.py: train_one_epoch, epochs times, with get_optimizer_scheduler's optimiser
    and LambdaLR (``average``: Lightning's accumulation instead, each loss / accum)."""
    name, lr, wd, momentum = opt_options
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=wd)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, orca_warmup_lambda(warmup, decay, len(loader)))
    for _ in range(epochs):
        optimizer.zero_grad()
        for i, (x, y) in enumerate(loader):
            loss = nn.functional.cross_entropy(model(x), y)
            (loss / accum if average else loss).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            if (i + 1) % accum == 0:
                optimizer.step()
                optimizer.zero_grad()
            scheduler.step()
    return model, scheduler.get_last_lr()[0]


def test_reference_loop_gives_orcas_weights():
    """7 micro-batches an epoch, accumulation 3 (the 7th's gradient dropped), clipping at 0.5,
    SGD with momentum and weight decay, 2 epochs under the WarmupLR lambda: the same weights
    as ORCA's loop, and different ones if the gradients were averaged instead of summed."""
    import lightning as L

    torch.manual_seed(0)
    data = TensorDataset(torch.randn(7 * 4, 6), torch.randint(0, 3, (7 * 4,)))
    loader = DataLoader(data, batch_size=4)  # the same micro-batches in both loops
    opt = ("sgd", 0.3, 0.01, 0.9)
    epochs, accum, clip, warmup, decay = 2, 3, 0.5, 1, 3
    start = _Tiny()
    theirs, last_lr = orca_train(copy.deepcopy(start), loader, epochs, accum, clip, opt, warmup, decay)
    averaged, _ = orca_train(copy.deepcopy(start), loader, epochs, accum, clip, opt, warmup, decay, average=True)

    module = FinetuneStage(copy.deepcopy(start), _Task(), {"name": "sgd", "lr": opt[1], "weight_decay": opt[2],
                                                            "momentum": opt[3]}, warmup_frac=0.0)
    module.use_loop(OrcaLoop(accum, len(loader), warmup, decay, clip=clip))
    trainer = L.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0)
    trainer.fit(module, loader)

    ours = dict(module.model.named_parameters())
    for name, p in theirs.named_parameters():
        torch.testing.assert_close(ours[name], p, rtol=1e-6, atol=1e-7)
    assert trainer.global_step == epochs * (7 // accum)  # 2 optimizer steps an epoch
    assert module.lr_schedulers().get_last_lr()[0] == pytest.approx(last_lr)
    assert last_lr == pytest.approx(opt[1] * orca_warmup_lambda(warmup, decay, 7)(epochs * 7))
    assert any(not torch.allclose(p, q, atol=1e-4) for p, q in zip(averaged.parameters(), theirs.parameters()))


@pytest.mark.parametrize("task", sorted(ORCA))
def test_every_paper_task_runs_the_reference_protocol(make_cfg, tmp_path, task):
    """protocol=reference end to end on each task's miniature files, with a tiny body of the
    paper's kind (a BERT for 1D tasks, a Swin for 2D ones): trained on train + validation,
    selected on test, ORCA's embedder init and, for fields, its decoder."""
    from formats import WRITERS
    from orca.pipeline import node_options, train
    from test_vision import write_image_folder
    from orca.tasks import create_task

    root = WRITERS[task].write(tmp_path / "data")
    swin = ORCA[task]["body"] == "swin-base"
    source = [f"align.source_root={write_image_folder(tmp_path / 'images')}"] if swin else []  # CIFAR-10's stand-in
    overrides = [o for o in getattr(WRITERS[task], "OVERRIDES", []) if not o.startswith("embedder.target_len")]
    cfg = make_cfg(f"task={task}", f"data.root={root}", "data.download=false", "budget=smoke", "protocol=reference",
                   f"body={'tiny-random-swin' if swin else 'tiny-random'}", "finetune.batch_size=2",
                   "finetune.accumulate_grad_batches=2", "finetune.max_steps=2", "finetune.num_validations=1",
                   "align.steps=1", "data.max_samples.train=12", "data.max_samples.val=4", "data.max_samples.test=4",
                   "finetune.warmup_epochs=1", "finetune.decay_epochs=10", *source, *overrides)
    record = train(cfg)
    assert record["protocol"]["select_on"] == "test" and "selected on test" in record["protocol"]["note"]
    assert record["metrics"]["val"] == record["metrics"]["test"]  # the "validation" loader is the test loader
    assert record["protocol"]["data"] == "orca"  # ORCA's splits and preprocessing
    orcas = create_task(task, **node_options(cfg.task)).load(
        root, download=False, max_samples=node_options(cfg.data.max_samples, drop=()), seed=cfg.data.subset_seed,
        orca_data=True)
    assert record["data_sizes"] == {"train": len(orcas.train) + len(orcas.val), "val": len(orcas.test),
                                    "test": len(orcas.test)}
    assert record["finetune"]["steps_done"] == cfg.finetune.max_steps
    assert record["model"]["embedder"]["init"] == "orca"
    if record["model"]["output_kind"] == "dense":
        assert record["model"]["head"]["decoder"] == "pixel_shuffle"
    batch, per_class = cfg.finetune.batch_size, cfg.align.per_class
    assert record["align"]["per_class"] == batch * (per_class // batch + 1)


@pytest.mark.parametrize("task", sorted(ORCA))
def test_clean_and_reference_differ_only_in_selection_and_data(compose_paper, task):
    """budget=paper runs ORCA's recipe under both protocols; only the protocol node differs:
    the selection and whose splits and preprocessing (protocol.data)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from tests.conftest import ROOT

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        clean = compose("train", overrides=[f"task={task}", "budget=paper"])
    clean, reference = ({k: v for k, v in OmegaConf.to_container(cfg).items() if k != "paths"}
                        for cfg in (clean, compose_paper(task)))
    assert clean.pop("protocol") == {"name": "clean", "select_on": "val", "data": "ours"}
    assert reference.pop("protocol") == {"name": "reference", "select_on": "test", "data": "orca"}
    assert clean == reference


def test_a_task_without_orcas_hyperparameters_is_told_what_to_add(compose_paper):
    """A new task's config may have no `reference:` block; budget=paper and protocol=reference
    then stop before Hydra runs, naming it."""
    from omegaconf import open_dict

    from orca.errors import ConfigError
    from orca.preflight import _check_references

    cfg = compose_paper("ecg")
    _check_references(cfg)
    with open_dict(cfg):
        del cfg["reference"]
    with pytest.raises(ConfigError, match="add one to its config"):
        _check_references(cfg)
