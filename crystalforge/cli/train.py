"""``crystalforge train``: train or fine-tune a model on a tokenized dataset."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import click


@click.command(context_settings={"ignore_unknown_options": True})
@click.option("--config", "-c", "config_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="YAML file of training options (CrystaLLM's keys are accepted).")
@click.argument("overrides", nargs=-1, type=click.UNPROCESSED)
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def train(config_path: Path | None, overrides: tuple[str, ...], no_progress: bool, as_json: bool) -> None:
    """Train a GPT on a dataset made by `crystalforge data prepare`.

    OVERRIDES are key=value pairs applied on top of the config file. init_from=resume
    continues from OUT_DIR/ckpt.pt; init_from=PATH fine-tunes a checkpoint. Run the
    same command under torchrun for data-parallel training.

    \b
    Examples:
      crystalforge train --config configs/default_model.yaml
      crystalforge train -c configs/tiny.yaml dataset=out/data max_iters=2000 device=cpu
      crystalforge train -c configs/default_model.yaml init_from=resume
      torchrun --nproc_per_node=4 -m crystalforge train -c configs/crystallm_small.yaml
    """
    from ..train.config import load_config
    from ..train.loop import train as run_train

    config = load_config(config_path, overrides)
    rank = int(os.environ.get("RANK", "0"))
    if rank == 0:
        logging.getLogger("crystalforge.train").setLevel(logging.INFO)
    result = run_train(config, progress=not no_progress)
    if rank != 0:
        return
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
        return
    for key, value in result.to_dict().items():
        click.echo(f"{key}: {value}")
