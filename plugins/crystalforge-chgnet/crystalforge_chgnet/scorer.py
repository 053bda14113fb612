"""Energy per atom of a CIF from the pretrained CHGNet universal potential."""

from __future__ import annotations

import contextlib
import io
import logging
import math
import threading
import warnings
from typing import Any, Iterable

import attrs

from crystalforge.contracts import ScoreResult
from crystalforge.errors import OptionError, ScorerError
from crystalforge.scoring.base import Scorer

logger = logging.getLogger(__name__)

_MODELS: dict[tuple[str, str], Any] = {}
_MODELS_LOCK = threading.Lock()


def load_chgnet(model_name: str = "0.3.0", device: str = "cpu") -> Any:
    """Return the pretrained CHGNet model (cached per process, model name and device).

    Raises:
        ScorerError: chgnet is not installed or the model cannot be loaded.
    """
    key = (model_name, device)
    with _MODELS_LOCK:
        model = _MODELS.get(key)
        if model is None:
            try:
                from chgnet.model import CHGNet
            except ImportError as exc:
                raise ScorerError(f"chgnet is not importable ({exc}); run: pip install chgnet") from None
            # CHGNet prints a banner on stdout even when asked not to: keep stdout clean
            # for CLI output such as --json.
            try:
                with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    model = CHGNet.load(model_name=model_name, use_device=device, verbose=False)
            except Exception as exc:
                raise ScorerError(
                    f"Cannot load CHGNet {model_name!r} on device {device!r}: {exc}"
                ) from None
            model.eval()
            _MODELS[key] = model
        return model


def _parse(cif: str) -> Any:
    """Return the pymatgen Structure in ``cif``, or None when it does not parse."""
    from pymatgen.core import Structure

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            structure = Structure.from_str(cif, fmt="cif")
    except Exception as exc:
        logger.debug("CIF does not parse: %s", exc)
        return None
    return structure if len(structure) > 0 else None


@attrs.define
class CHGNetScorer(Scorer):
    """Energy per atom (eV/atom) predicted by pretrained CHGNet; ``nan`` when it cannot score.

    With ``relax`` the score is the energy of the relaxed cell, and :meth:`score_details`
    also gives the unrelaxed energy and the relaxed structure (a run folder writes it as
    ``<name>_relaxed.cif``).
    """

    unit = "eV/atom"  # a class constant, not an option
    relax: bool = attrs.field(default=False, metadata={"help": "relax first (quick FIRE), then score"})
    relax_steps: int = attrs.field(default=20, metadata={"help": "FIRE steps when relaxing"})
    fmax: float = attrs.field(default=0.1, metadata={"help": "force threshold (eV/A) ending relaxation"})
    device: str = attrs.field(default="cpu", metadata={"help": "torch device of the model"})
    model_name: str = attrs.field(default="0.3.0", metadata={"help": "pretrained CHGNet version"})
    max_atoms: int = attrs.field(default=500, metadata={"help": "larger cells score nan"})
    batch_size: int = attrs.field(default=16, metadata={"help": "structures per model call"})
    lower_is_better: bool = attrs.field(default=True, metadata={"option": False})
    _relaxer: Any = attrs.field(default=None, init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        if self.relax_steps < 1:
            raise OptionError(f"Option 'relax_steps' must be >= 1, got {self.relax_steps}")
        if self.max_atoms < 1 or self.batch_size < 1:
            raise OptionError("Options 'max_atoms' and 'batch_size' must be >= 1")

    @property
    def model(self) -> Any:
        return load_chgnet(self.model_name, self.device)

    def _prepare(self, cif: str) -> Any:
        structure = _parse(cif)
        if structure is None:
            return None
        if len(structure) > self.max_atoms:
            logger.info("not scoring a %d-atom cell (max_atoms=%d)", len(structure), self.max_atoms)
            return None
        return structure

    def _relax(self, structure: Any) -> Any:
        from chgnet.model import StructOptimizer

        if self._relaxer is None:
            with contextlib.redirect_stdout(io.StringIO()):
                self._relaxer = StructOptimizer(
                    model=self.model, optimizer_class="FIRE", use_device=self.device,
                    on_isolated_atoms="ignore",
                )
        try:
            with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result = self._relaxer.relax(
                    structure, steps=self.relax_steps, fmax=self.fmax, verbose=False,
                    loginterval=self.relax_steps,
                )
        except Exception as exc:
            logger.debug("CHGNet relaxation failed: %s", exc)
            return None
        return result["final_structure"]

    def _energies(self, structures: list[Any]) -> list[float]:
        """Return energy per atom for each structure (nan where CHGNet fails)."""
        import torch

        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                predictions = self.model.predict_structure(
                    structures, task="e", batch_size=self.batch_size
                )
            if isinstance(predictions, dict):  # chgnet unwraps a one-structure list
                predictions = [predictions]
            return [_finite(p["e"]) for p in predictions]
        except Exception as exc:
            if len(structures) == 1:
                logger.debug("CHGNet failed on a structure: %s", exc)
                return [math.nan]
            # one bad structure (e.g. isolated atoms) fails the batch: retry one by one
            return [self._energies([s])[0] for s in structures]

    def score(self, cif: str) -> float:
        """Return CHGNet's energy per atom (eV/atom) for ``cif``; ``nan`` if it cannot score."""
        return self.score_many([cif])[0]

    def score_many(self, cifs: Iterable[str]) -> list[float]:
        """Return energy per atom for each CIF in order (``nan`` where it cannot score)."""
        return [result.value for result in self.score_details(cifs)]

    def score_details(self, cifs: Iterable[str]) -> list[ScoreResult]:
        """Return one result per CIF in order: the energy per atom (of the relaxed cell with
        ``relax``; ``nan`` where it cannot score) and, with ``relax``, the extras
        ``energy_unrelaxed`` and ``energy_relaxed`` and the relaxed structure."""
        structures = [self._prepare(cif) for cif in cifs]
        results = [ScoreResult(math.nan)] * len(structures)
        todo = [i for i, s in enumerate(structures) if s is not None]
        if not todo:
            return results
        unrelaxed = dict(zip(todo, self._energies([structures[i] for i in todo])))
        if not self.relax:
            return [ScoreResult(unrelaxed[i]) if i in unrelaxed else result for i, result in enumerate(results)]
        relaxed = {i: self._relax(structures[i]) for i in todo}
        done = [i for i in todo if relaxed[i] is not None]
        energies = dict(zip(done, self._energies([relaxed[i] for i in done]))) if done else {}
        for i in todo:
            energy = energies.get(i, math.nan)
            results[i] = ScoreResult(energy, {"energy_unrelaxed": unrelaxed[i], "energy_relaxed": energy},
                                     relaxed[i])
        return results


def _finite(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    return number if math.isfinite(number) else math.nan
