"""The training loop: ``train(config) -> TrainResult``.

AdamW with a linear warm-up and cosine decay, gradient accumulation, autocast mixed
precision on GPU (a gradient scaler for float16), windows that start at CIF boundaries,
periodic train/val loss estimates and atomic checkpoints in ``out_dir/ckpt.pt``.
``init_from`` ``"resume"`` continues from that checkpoint (weights, optimizer state,
iteration); a checkpoint path fine-tunes a published model. Under ``torchrun`` the
model is wrapped in DistributedDataParallel and only rank 0 writes.

Iteration numbers: the checkpoint saved at ``iter_num = n`` holds the model after ``n``
optimizer steps, and a run with ``max_iters = n`` ends after ``n`` steps with a final
evaluation.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ..errors import CheckpointError, ConfigError, DataError
from ..model.datacard import CHECKPOINT_KEY, DataCard, card_from_checkpoint, card_from_dataset
from .config import TrainConfig
from .dataset import open_dataset
from .runtime import Runtime, setup_runtime

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "ckpt.pt"


@dataclass
class TrainResult:
    """Outcome of a run: last iteration, losses, where the checkpoint is, throughput.

    ``tokens_per_second`` and ``tokens_seen`` (all processes together) leave out the first
    optimizer step of the run, which pays for warm-up and compilation.
    """

    iter_num: int
    best_val_loss: float
    train_loss: float
    val_loss: float
    checkpoint: Path | None
    tokens_per_second: float
    tokens_seen: int
    iterations_run: int
    out_dir: Path

    def to_dict(self) -> dict:
        """Return the result as JSON-ready values."""
        return {
            "iter_num": self.iter_num, "best_val_loss": _finite_or_none(self.best_val_loss),
            "train_loss": _finite_or_none(self.train_loss), "val_loss": _finite_or_none(self.val_loss),
            "checkpoint": str(self.checkpoint) if self.checkpoint else None,
            "tokens_per_second": round(self.tokens_per_second, 1), "tokens_seen": self.tokens_seen,
            "iterations_run": self.iterations_run, "out_dir": str(self.out_dir),
        }


def _finite_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def learning_rate_at(iteration: int, config: TrainConfig) -> float:
    """Return the learning rate of ``iteration``: linear warm-up, cosine decay, then ``min_lr``."""
    if not config.decay_lr:
        return config.learning_rate
    if iteration < config.warmup_iters:
        return config.learning_rate * (iteration + 1) / (config.warmup_iters + 1)
    if iteration >= config.lr_decay_iters:
        return config.min_lr
    span = max(1, config.lr_decay_iters - config.warmup_iters)
    progress = (iteration - config.warmup_iters) / span
    return config.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (config.learning_rate - config.min_lr)


def _build_model(config: TrainConfig, vocab_size: int):
    """Return ``(model, checkpoint dict or None)`` as ``init_from`` asks."""
    from ..model.checkpoint import load_checkpoint, model_from_checkpoint
    from ..model.gpt import GPT, GPTConfig

    if config.init_from == "scratch":
        gpt_config = GPTConfig(block_size=config.block_size, vocab_size=vocab_size, n_layer=config.n_layer,
                               n_head=config.n_head, n_embd=config.n_embd, dropout=config.dropout, bias=config.bias)
        return GPT(gpt_config), None
    if config.init_from == "resume":
        source = Path(config.out_dir) / CHECKPOINT_NAME
        if not source.is_file():
            raise CheckpointError(f"nothing to resume: {source} not found (use init_from=scratch to start)")
    else:
        source = Path(config.init_from)
    ckpt = load_checkpoint(source)
    # dropout is a training choice, not part of the weights: take it from this config
    ckpt = {**ckpt, "model_args": {**ckpt["model_args"], "dropout": config.dropout}}
    model = model_from_checkpoint(ckpt)
    for key in ("n_layer", "n_head", "n_embd", "bias"):
        if getattr(model.config, key) != getattr(config, key):
            log.info("%s: using the checkpoint's %s=%s (config says %s)", source, key,
                     getattr(model.config, key), getattr(config, key))
    if config.block_size > model.config.block_size:
        raise ConfigError(f"config key 'block_size' ({config.block_size}) exceeds the checkpoint's "
                          f"block_size {model.config.block_size}")
    if model.config.vocab_size != vocab_size:
        raise DataError(f"dataset vocab_size {vocab_size} differs from the checkpoint's {model.config.vocab_size}")
    return model, ckpt


def training_data_card(config: TrainConfig, ckpt: dict | None) -> DataCard:
    """Return the data card of the model this run trains: its dataset's training split, plus what
    the checkpoint it starts from saw (unknown when that checkpoint has no card, as CrystaLLM's).

    Resuming a run on the data its checkpoint's card already describes keeps that card. A
    dataset whose card cannot be computed gives an unknown card (logged), never a failed run.
    """
    try:
        card = card_from_dataset(config.dataset)
    except DataError as exc:
        log.warning("no data card for %s: %s", config.dataset, exc)
        return DataCard.unknown()
    if ckpt is None:
        return card
    prior = card_from_checkpoint(ckpt)
    if config.init_from == "resume" and (not prior.known or prior.to_dict() == card.to_dict()):
        return card  # the same run continues on its own data
    return prior.merged(card)


def train(config: TrainConfig, *, progress: bool = True,
          on_eval: Callable[[int, dict[str, float]], None] | None = None) -> TrainResult:
    """Train a GPT as ``config`` says and return a :class:`TrainResult`.

    ``on_eval(iter_num, losses)`` is called after each evaluation (rank 0 only).

    Raises:
        ConfigError: an option cannot be used here (device, block size, ...).
        DataError: the dataset folder is missing or its files are unusable.
        CheckpointError: nothing to resume, or the checkpoint to fine-tune is unusable.
    """
    runtime = setup_runtime(config)
    try:
        return _train(config, runtime, progress=progress, on_eval=on_eval)
    finally:
        runtime.close()


def _train(config: TrainConfig, runtime: Runtime, *, progress: bool,
           on_eval: Callable[[int, dict[str, float]], None] | None) -> TrainResult:
    from tqdm import tqdm

    from ..model.checkpoint import save_checkpoint

    dataset = open_dataset(config.dataset, config.block_size, need_val=config.validate and config.eval_iters_val > 0)
    model, ckpt = _build_model(config, dataset.vocab_size)
    resuming = config.init_from == "resume"
    # only rank 0 writes checkpoints, so only it reads the dataset for the card
    card_extra = {CHECKPOINT_KEY: training_data_card(config, ckpt).to_dict()} if runtime.is_main else None
    iter_num = int(ckpt.get("iter_num", 0)) if resuming else 0
    best_val_loss = float(ckpt.get("best_val_loss", math.inf)) if resuming else math.inf
    start_iter = iter_num

    torch.manual_seed(config.seed + runtime.rank)
    if runtime.device_type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    model.to(runtime.device)
    model.train()
    optimizer = model.configure_optimizers(config.weight_decay, config.learning_rate, (config.beta1, config.beta2),
                                           device_type=runtime.device_type)
    if resuming and ckpt.get("optimizer"):
        optimizer.load_state_dict(ckpt["optimizer"])
    ckpt = None  # free the checkpoint's tensors
    scaler = torch.amp.GradScaler(runtime.device_type, enabled=runtime.dtype == torch.float16)

    raw_model = model
    if config.compile:
        model = torch.compile(model)
    if runtime.distributed:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(model, device_ids=[runtime.local_rank] if runtime.device_type == "cuda" else None)

    accumulation = config.gradient_accumulation_steps
    if runtime.world_size > 1:
        if accumulation % runtime.world_size == 0:
            accumulation //= runtime.world_size
        elif runtime.is_main and accumulation > 1:
            log.warning("gradient_accumulation_steps %d is not divisible by %d processes; each process "
                        "accumulates %d micro-batches", accumulation, runtime.world_size, accumulation)
    tokens_per_iter = config.batch_size * config.block_size * accumulation * runtime.world_size

    # a different stream per rank, and per resume point, so a resumed run sees fresh batches
    batch_gen = torch.Generator().manual_seed(config.seed + 7919 * runtime.rank + 1_000_003 * iter_num)
    eval_gen = torch.Generator()
    out_dir = Path(config.out_dir)
    if runtime.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        log.info("training %.2fM parameters on %s (%s), %d tokens per iteration", raw_model.num_params() / 1e6,
                 runtime.device, str(runtime.dtype).removeprefix("torch."), tokens_per_iter)

    def batch(split) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = split.sample(config.batch_size, config.block_size, batch_gen)
        return _to_device(x, y, runtime)

    @torch.no_grad()
    def estimate_losses(at_iter: int) -> dict[str, float]:
        eval_gen.manual_seed(config.seed + 31 * runtime.rank + at_iter)
        model.eval()
        out = {}
        for name, split, iters in (("train", dataset.train, config.eval_iters_train),
                                   ("val", dataset.val, config.eval_iters_val if config.validate else 0)):
            total = torch.zeros(2, device=runtime.device)  # sum of losses, count
            if split is not None:
                for _ in range(iters):
                    x, y = split.sample(config.batch_size, config.block_size, eval_gen)
                    x, y = _to_device(x, y, runtime)
                    with runtime.autocast():
                        _, loss = model(x, y)
                    total += torch.stack([loss.float(), torch.ones((), device=runtime.device)])
            if runtime.distributed:
                torch.distributed.all_reduce(total)
            out[name] = (total[0] / total[1]).item() if total[1] > 0 else math.nan
        model.train()
        return out

    checkpoint_path: Path | None = (out_dir / CHECKPOINT_NAME) if (out_dir / CHECKPOINT_NAME).exists() else None
    losses = {"train": math.nan, "val": math.nan}
    bar = tqdm(total=config.max_iters, initial=min(iter_num, config.max_iters), desc="train", unit="it",
               disable=not (progress and runtime.is_main), dynamic_ncols=True)
    train_seconds = 0.0
    tokens_seen = 0
    last_loss = math.nan
    x, y = batch(dataset.train)
    try:
        while True:
            lr = learning_rate_at(iter_num, config)
            for group in optimizer.param_groups:
                group["lr"] = lr
            if iter_num % config.eval_interval == 0 or iter_num >= config.max_iters or config.eval_only:
                losses = estimate_losses(iter_num)
                use_val = config.validate and math.isfinite(losses["val"])
                metric = losses["val"] if use_val else losses["train"]
                improved = math.isfinite(metric) and metric < best_val_loss
                if improved:
                    best_val_loss = metric
                if runtime.is_main:
                    message = f"iter {iter_num}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}"
                    if bar.disable:
                        log.info(message)
                    else:
                        bar.write(message)
                    if (improved or config.always_save_checkpoint) and iter_num > start_iter:
                        checkpoint_path = save_checkpoint(out_dir / CHECKPOINT_NAME, raw_model, optimizer,
                                                          iter_num=iter_num, best_val_loss=best_val_loss,
                                                          config=config.to_dict(), extra=card_extra)
                    if on_eval is not None:
                        on_eval(iter_num, dict(losses))
            if config.eval_only or iter_num >= config.max_iters:
                break

            started = time.perf_counter()
            for micro in range(accumulation):
                sync = contextlib.nullcontext()
                if runtime.distributed and micro < accumulation - 1:
                    sync = model.no_sync()  # gradients are all-reduced once, on the last micro-batch
                with sync:
                    with runtime.autocast():
                        _, loss = model(x, y)
                        loss = loss / accumulation
                    x, y = batch(dataset.train)  # fetch the next batch while the GPU works
                    scaler.scale(loss).backward()
            if config.grad_clip > 0.0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(raw_model.parameters(), config.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            iter_num += 1
            if iter_num % config.log_interval == 0 or iter_num >= config.max_iters:
                last_loss = loss.item() * accumulation  # a device sync: only every log_interval
            if iter_num > start_iter + 1:  # the first step (warm-up, compilation) is not timed
                if runtime.device_type == "cuda":
                    torch.cuda.synchronize(runtime.device)
                tokens_seen += tokens_per_iter
                train_seconds += time.perf_counter() - started
            if runtime.is_main:
                rate = tokens_seen / train_seconds if train_seconds > 0 else 0.0
                if iter_num % config.log_interval == 0:
                    bar.set_postfix(loss=f"{last_loss:.4f}", lr=f"{lr:.2e}", tok_s=f"{rate:,.0f}", refresh=False)
                    # without a progress bar the log is the only sign of life: say it at INFO
                    log.log(logging.INFO if bar.disable else logging.DEBUG,
                            "iter %d: loss %.4f, lr %.3e, %.0f tokens/s", iter_num, last_loss, lr, rate)
                bar.update(1)
    finally:
        bar.close()
    if runtime.is_main and checkpoint_path is None and iter_num > start_iter:
        # no loss was ever measured (eval_iters 0): still leave the trained model behind
        checkpoint_path = save_checkpoint(out_dir / CHECKPOINT_NAME, raw_model, optimizer, iter_num=iter_num,
                                          best_val_loss=best_val_loss, config=config.to_dict(), extra=card_extra)
    rate = tokens_seen / train_seconds if train_seconds > 0 else 0.0
    return TrainResult(iter_num=iter_num, best_val_loss=best_val_loss, train_loss=losses["train"],
                       val_loss=losses["val"], checkpoint=checkpoint_path if runtime.is_main else None,
                       tokens_per_second=rate, tokens_seen=tokens_seen,
                       iterations_run=iter_num - start_iter, out_dir=out_dir)


def _to_device(x: torch.Tensor, y: torch.Tensor, runtime: Runtime) -> tuple[torch.Tensor, torch.Tensor]:
    if runtime.device_type == "cuda":
        return (x.pin_memory().to(runtime.device, non_blocking=True),
                y.pin_memory().to(runtime.device, non_blocking=True))
    return x.to(runtime.device), y.to(runtime.device)
