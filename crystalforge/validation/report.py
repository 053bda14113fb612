"""The composite validity report: every registered validator, one result each.

Built-in checks and third-party validators (registered through the
``register_validators`` hook) all run on the same :class:`ValidationContext`, so the CIF
is parsed once. ``is_valid`` is the conjunction of the required checks: those registered
with ``required=True`` plus any named in ``require=`` at call time.

Every check runs under a time limit (:func:`default_check_timeout`, 60 s unless
``CRYSTALFORGE_CHECK_TIMEOUT`` says otherwise): it runs in a daemon thread, and when the
limit passes the check fails with "timed out after N s" and the report goes on. Python
cannot kill a thread, so the hung call is abandoned; while it has not returned, later
CIFs do not start that validator again (it fails at once, saying so), so a plugin that
never returns costs one thread, not one per CIF. Batch commands run validation in worker
processes (:mod:`crystalforge.parallel`), which are killed at the end of the run.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from typing import Any, Sequence

import attrs

# site rows x symmetry operators above which a CIF is not parsed (cost grows quadratically)
from ..cif.safety import MAX_EXPANDED_POSITIONS  # noqa: F401 - re-exported, used below

logger = logging.getLogger(__name__)

#: seconds one check of one CIF may run (CrystalNN on a few hundred sites takes seconds)
DEFAULT_CHECK_TIMEOUT = 60.0
# id(validator instance) -> (instance, thread) of a check call that timed out and still runs
_ABANDONED: dict[int, tuple[Any, threading.Thread]] = {}
_ABANDONED_LOCK = threading.Lock()


def default_check_timeout() -> float | None:
    """Return the per-check time limit: ``CRYSTALFORGE_CHECK_TIMEOUT`` seconds (0: none), else 60."""
    raw = os.environ.get("CRYSTALFORGE_CHECK_TIMEOUT", "").strip()
    if not raw:
        return DEFAULT_CHECK_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        from ..errors import ConfigError

        raise ConfigError(f"CRYSTALFORGE_CHECK_TIMEOUT={raw!r} is not a number of seconds") from None
    return value if value > 0 else None

BOND_LENGTH = "bond_length"


@attrs.frozen
class CheckResult:
    """The outcome of one check: passed or not, an optional score in [0, 1], and why.

    ``passed`` and ``required`` are stored as built-in ``bool`` and ``score`` as ``float``
    whatever a plugin hands over (a NumPy comparison gives ``numpy.bool_``), so reports,
    CSV columns and summaries treat every validator's result alike.
    """

    name: str
    passed: bool = attrs.field(converter=bool)
    score: float | None = attrs.field(default=None, converter=attrs.converters.optional(float))
    message: str = ""
    required: bool = attrs.field(default=False, converter=bool)


class ValidationContext:
    """What the checks of one CIF share: the text and its parsed pymatgen ``Structure``.

    ``structure`` is parsed on first use and cached; it is ``None`` when the CIF cannot be
    read, and ``parse_error`` then says why. Checks may keep other shared results in
    ``cache`` (a plain dict).
    """

    def __init__(self, cif: str) -> None:
        self.cif = cif
        self.cache: dict[str, Any] = {}
        self._parsed = False
        self._structure = None
        self._parse_error: str | None = None
        self._parser: Any = None

    def cif_parser(self):
        """Return pymatgen's ``CifParser`` of the text, made once and shared by the checks
        that read fields and by the structure parse.

        Raises:
            Exception: whatever ``CifParser.from_str`` raised (on every call).
        """
        if self._parser is None:
            import warnings

            from pymatgen.io.cif import CifParser

            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    self._parser = CifParser.from_str(self.cif)
            except Exception as exc:  # noqa: BLE001 - handed to each caller
                self._parser = exc
        if isinstance(self._parser, Exception):
            raise self._parser
        return self._parser

    def _parse(self) -> None:
        if self._parsed:
            return
        self._parsed = True
        # seen by another check only when the one parsing was abandoned after a timeout
        self._parse_error = "the CIF is still being parsed by a check that timed out"
        from ..cif.extract import count_site_expansion
        from ..cif.preprocess import parse_structure
        from ..errors import CrystalforgeError

        rows, operators = count_site_expansion(self.cif)
        if rows * operators > MAX_EXPANDED_POSITIONS:  # pymatgen's site merging would take minutes
            self._parse_error = (f"{rows} site rows x {operators} symmetry operators is more than the "
                                 f"{MAX_EXPANDED_POSITIONS} positions this validator expands")
            return
        try:
            parser = self._shared_parser()
            self._structure = parse_structure(self.cif, parser=parser, checked=parser is not None)
            self._parse_error = None
        except CrystalforgeError as exc:
            self._parse_error = str(exc)
        except Exception as exc:  # noqa: BLE001 - hostile input must not escape
            self._parse_error = f"CIF could not be parsed ({type(exc).__name__}: {exc})"[:300]

    def _shared_parser(self):
        """The shared ``CifParser`` of a text that passed ``check_cif_text``, or None
        (``parse_structure`` then says why)."""
        from ..cif.safety import check_cif_text

        try:
            check_cif_text(self.cif)  # no structure is built from values that could crash C code
        except Exception:  # noqa: BLE001 - parse_structure reports it
            return None
        try:
            return self.cif_parser()
        except Exception:  # noqa: BLE001 - parse_structure reports it
            return None

    @property
    def structure(self):
        """The parsed ``Structure``, or ``None`` when the CIF cannot be read."""
        self._parse()
        return self._structure

    @property
    def parse_error(self) -> str | None:
        """Why the CIF could not be parsed, or ``None``."""
        self._parse()
        return self._parse_error


@attrs.define
class ValidityReport:
    """Per-check results of one CIF and the overall verdict."""

    checks: dict[str, CheckResult] = attrs.field(factory=dict)

    @property
    def is_valid(self) -> bool:
        """True when every required check passed (and at least one check is required)."""
        required = [r for r in self.checks.values() if r.required]
        return bool(required) and all(r.passed for r in required)

    @property
    def bond_length_score(self) -> float | None:
        """The bond-length reasonableness score in [0, 1], or ``None`` when not computed."""
        result = self.checks.get(BOND_LENGTH)
        return None if result is None else result.score

    def failed(self) -> list[str]:
        """Return the names of the checks that did not pass (required or not)."""
        return [name for name, result in self.checks.items() if not result.passed]

    def to_dict(self) -> dict[str, Any]:
        """Return a flat dict: ``is_valid`` and ``<check>``, ``<check>_score``, ``<check>_message``."""
        out: dict[str, Any] = {"is_valid": self.is_valid}
        for name, result in self.checks.items():
            out[name] = result.passed
            out[f"{name}_score"] = result.score
            out[f"{name}_message"] = result.message
        return out

    def summary(self) -> str:
        """Return one line: ``valid`` or ``invalid: <failed required checks>``."""
        if self.is_valid:
            return "valid"
        failed = [name for name, r in self.checks.items() if r.required and not r.passed]
        return "invalid: " + (", ".join(failed) if failed else "no required checks")


@functools.lru_cache(maxsize=1)
def _default_manager():
    from ..plugins import make_plugin_manager

    return make_plugin_manager()


def _as_result(name: str, value: Any, required: bool) -> CheckResult:
    """Coerce what a (possibly third-party) validator returned into a :class:`CheckResult`."""
    if isinstance(value, CheckResult):
        return attrs.evolve(value, name=name, required=required)
    if isinstance(value, bool):
        return CheckResult(name, value, None, "passed" if value else "failed", required)
    passed = getattr(value, "passed", None)
    if isinstance(passed, bool):
        score = getattr(value, "score", None)
        return CheckResult(name, passed, None if score is None else float(score),
                           str(getattr(value, "message", "")), required)
    return CheckResult(name, False, None, f"validator returned {type(value).__name__}, not a CheckResult", required)


def validators(plugin_manager=None, require: Sequence[str] = (), options=None) -> list[tuple[str, Any, bool]]:
    """Return ``(name, validator instance or build error, required)`` for every registered validator.

    ``options`` maps ``"CHECK.KEY"`` to a value; see
    :func:`crystalforge.components.create_validators`.

    Raises:
        UnknownComponentError: a name in ``require`` or ``options`` is not a registered validator.
        OptionError: an unknown validator option or a value of the wrong type.
    """
    from ..components import create_validators

    manager = plugin_manager if plugin_manager is not None else _default_manager()
    return create_validators(manager, options, require)


def run_checks(cif: str, built: list[tuple[str, Any, bool]], *, timeout: float | None | str = "default") -> ValidityReport:
    """Return the report of ``cif`` for validators from :func:`validators` (never raises).

    ``timeout``: seconds each check may run (``None``: no limit; by default
    :func:`default_check_timeout`); a check past it fails with "timed out after N s".
    """
    if timeout == "default":
        timeout = default_check_timeout()
    if not isinstance(cif, str):
        try:
            cif = cif.decode("utf-8", errors="replace") if isinstance(cif, (bytes, bytearray)) else str(cif)
        except Exception:  # noqa: BLE001
            cif = ""
    context = ValidationContext(cif)
    report = ValidityReport()
    for name, instance, required in built:
        if isinstance(instance, Exception):
            result = CheckResult(name, False, None, f"validator could not be built: {instance}", required)
        else:
            result = _run_check(name, instance, cif, context, required, timeout)
        report.checks[name] = result
    return report


def _run_check(name: str, instance: Any, cif: str, context: ValidationContext, required: bool,
               timeout: float | None) -> CheckResult:
    """Run one check, under ``timeout`` seconds in a daemon thread when a limit is set."""
    if timeout is None:
        outcome = _call_check(instance, cif, context)
    else:
        key = id(instance)
        with _ABANDONED_LOCK:
            earlier = _ABANDONED.get(key)
            if earlier is not None and not earlier[1].is_alive():
                del _ABANDONED[key]
                earlier = None
        if earlier is not None:
            return CheckResult(name, False, None, "not run: an earlier call of this check timed out and "
                               "has not returned", required)
        box: dict[str, Any] = {}
        thread = threading.Thread(target=lambda: box.update(outcome=_call_check(instance, cif, context)),
                                  name=f"crystalforge-check-{name}", daemon=True)
        thread.start()
        thread.join(timeout)
        if thread.is_alive():
            with _ABANDONED_LOCK:
                _ABANDONED[key] = (instance, thread)
            logger.warning("validator %s timed out after %g s; abandoned", name, timeout)
            return CheckResult(name, False, None, f"timed out after {timeout:g} s", required)
        outcome = box.get("outcome", (False, RuntimeError("check thread ended without a result")))
    ok, value = outcome
    if not ok and not isinstance(value, Exception):
        raise value  # KeyboardInterrupt or SystemExit raised by the check: stop, as it asked
    if ok:
        try:
            return _as_result(name, value, required)
        except Exception as exc:  # noqa: BLE001 - e.g. a score that is not a number
            ok, value = False, exc
    detail = str(value).strip().splitlines()[0] if str(value).strip() else ""
    return CheckResult(name, False, None, f"check raised {type(value).__name__}: {detail}"[:300], required)


def _call_check(instance: Any, cif: str, context: ValidationContext) -> tuple[bool, Any]:
    """Return ``(True, result)`` or ``(False, exception)``; in a thread, a KeyboardInterrupt
    is handed back too, so the caller re-raises it where it belongs."""
    try:
        return True, instance.check(cif, context)
    except Exception as exc:  # noqa: BLE001 - one check's crash is its own failure
        logger.debug("validator %s raised", type(instance).__name__, exc_info=True)
        return False, exc
    except BaseException as exc:  # noqa: BLE001 - KeyboardInterrupt / SystemExit: re-raised by the caller
        return False, exc


def failed_report(built: list[tuple[str, Any, bool]], message: str) -> ValidityReport:
    """Return a report in which every validator of ``built`` failed with ``message``
    (for a CIF whose validation could not finish, e.g. its worker process crashed)."""
    report = ValidityReport()
    for name, _, required in built:
        report.checks[name] = CheckResult(name, False, None, message, required)
    return report


def validate(cif: str, *, plugin_manager=None, require: Sequence[str] = (), options=None,
             timeout: float | None | str = "default") -> ValidityReport:
    """Run every registered validator on ``cif`` and return the report.

    Never raises on bad CIF input: empty, binary, truncated or absurd CIFs fail the checks
    with a message saying why.

    Args:
        cif: the CIF text (postprocessed form: full symmetry operators).
        plugin_manager: where validators come from; a default manager (built-ins and
            installed plugins) when omitted.
        require: validator names that must pass for ``is_valid``, beyond those registered
            as required.
        options: validator options, ``{"CHECK.KEY": value}`` (``{"bond_length.tolerance": 0.3}``).
        timeout: seconds each check may run before it fails with "timed out after N s"
            (``None``: no limit; by default :func:`default_check_timeout`).

    Raises:
        UnknownComponentError: a name in ``require`` or ``options`` is not a registered validator.
        OptionError: an unknown validator option or a value of the wrong type.
    """
    return run_checks(cif, validators(plugin_manager, require, options), timeout=timeout)
