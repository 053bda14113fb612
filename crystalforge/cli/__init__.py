"""The ``crystalforge`` command line: a click group whose commands live one per module.

Commands are imported only when used, so ``crystalforge --version`` stays fast. Library
errors (:class:`crystalforge.errors.CrystalforgeError`) are shown as one line with exit
code 1; usage errors exit with 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import importlib
import logging
import sys

import click

from ..errors import CrystalforgeError

#: command name -> "module:attribute" (module relative to crystalforge.cli)
COMMANDS: dict[str, str] = {
    "run": "run:run",
    "prompt": "cif_commands:prompt",
    "preprocess": "cif_commands:preprocess",
    "postprocess": "cif_commands:postprocess",
    "validate": "validate:validate",
    "export": "export:export",
    "plugins": "plugins:plugins",
    "list": "plugins:list_components",
    "data": "data:data",
    "train": "train:train",
    "download": "download:download",
    "scorer": "scorer:scorer",
    "evaluate": "evaluate:evaluate",
    "benchmark": "benchmark:benchmark",
    "vun": "vun:vun",
    "embeddings": "embeddings:embeddings",
    "serve": "serve:serve",
    "view": "view:view",
}


class LazyGroup(click.Group):
    """A group that imports each command's module on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        names = list(self.commands)
        for name, target in COMMANDS.items():
            module = target.split(":")[0]
            if importlib.util.find_spec(f"{__name__}.{module}") is not None:
                names.append(name)
        return names

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return super().get_command(ctx, cmd_name)
        module_name, _, attr = target.partition(":")
        try:
            module = importlib.import_module(f"{__name__}.{module_name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"{__name__}.{module_name}":
                return None
            raise
        return getattr(module, attr)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except CrystalforgeError as exc:
            if ctx.obj is not None and ctx.obj.get("debug"):
                raise
            raise click.ClickException(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from exc
        except (click.ClickException, click.Abort, click.exceptions.Exit, KeyboardInterrupt):
            raise
        except Exception as exc:  # a bug, not a user mistake: still one line unless --debug
            if ctx.obj is not None and ctx.obj.get("debug"):
                raise
            raise click.ClickException(
                f"unexpected {type(exc).__name__}: {exc} (rerun with --debug for the traceback)"
            ) from exc


def _version() -> str:
    from .. import __version__

    return __version__


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(version=_version(), prog_name="crystalforge")
@click.option("--debug", is_flag=True, help="Show full tracebacks and debug logging.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Generate crystal structures with a GPT trained on CIF files.

    \b
    Examples:
      crystalforge run CaTiO3 --spacegroup Pm-3m -n 10
      crystalforge validate out/*.cif
      crystalforge plugins
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


def get_plugin_manager(ctx: click.Context):
    """Return the plugin manager for this invocation (built once, kept in ``ctx.obj``)."""
    root = ctx.find_root()
    root.ensure_object(dict)
    manager = root.obj.get("plugin_manager")
    if manager is None:
        from ..plugins import make_plugin_manager

        manager = make_plugin_manager()
        root.obj["plugin_manager"] = manager
    return manager


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    cli.main(args=argv, prog_name="crystalforge")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
