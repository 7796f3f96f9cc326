"""The command line: ``chainrule train | evaluate | predict | lab | bench | sweep | dashboard``.

Each command lives in its own module of this package and registers itself on
``app``; ``main()`` turns chainrule's errors into one line and exit status 2.
"""

from __future__ import annotations

import importlib
import sys

import typer

app = typer.Typer(
    name="chainrule",
    help="chainrule: deep learning built up from the chain rule, and a lab that shows why deep networks train or fail to.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# command modules, in the order their commands are listed in --help
COMMANDS = ("train", "bench", "dashboard", "sweep", "lab")

for _name in COMMANDS:
    importlib.import_module(f"{__name__}.{_name}")


def fail(message: str) -> "typer.Exit":
    """Print ``message`` as one line on stderr and return the Exit(2) to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def main() -> None:
    """Entry point of the ``chainrule`` script and of ``python -m chainrule``.

    chainrule's errors, malformed options (``--epochs abc``) and running out of
    memory print one line on stderr and exit with status 2, never a traceback;
    a warning from any library prints as one line too.
    """
    import warnings

    from ..errors import ChainruleError

    def one_line(message: Warning | str, category: type, filename: str, lineno: int, file: object = None, line: object = None) -> None:
        typer.echo(f"warning: {str(message).splitlines()[0] if str(message) else category.__name__}", err=True)

    warnings.showwarning = one_line  # a warning from a library is one line too, never a source listing
    try:
        code = app(standalone_mode=False)
    except ChainruleError as e:
        typer.echo(f"error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", err=True)
        sys.exit(2)
    except MemoryError:  # an allocation the memory estimate did not foresee
        typer.echo("error: out of memory: choose fewer or narrower layers, or a smaller batch", err=True)
        sys.exit(2)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(1)
    except Exception as e:
        # the parser's usage errors (click's, or the copy of click inside newer typer)
        if not (hasattr(e, "format_message") and isinstance(getattr(e, "exit_code", None), int)):
            raise
        if type(e).__name__ == "NoArgsIsHelpError":
            app()  # standalone mode prints the help as usual
            return
        ctx = getattr(e, "ctx", None)
        hint = f" (see: {ctx.command_path} --help)" if ctx is not None else ""
        typer.echo(f"error: {(e.format_message() or type(e).__name__).splitlines()[0]}{hint}", err=True)
        sys.exit(e.exit_code)
    if isinstance(code, int) and code:  # a command's typer.Exit(code)
        sys.exit(code)
