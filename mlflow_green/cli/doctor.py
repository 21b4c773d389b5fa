"""``mlflow-green doctor``: how autolog would measure energy on this machine, why, and the fix.

For each domain (gpu, cpu, ram): the method a run would record in
``green.<domain>_meter`` and the hardware, why not a better method, and the exact
steps that would give one (RAPL permission, a container hiding the host's powercap
zones, a VM, the NVIDIA driver, ``CUDA_VISIBLE_DEVICES``, MIG). The findings are
:func:`mlflow_green.measure.diagnose.diagnose`'s; nothing on the machine is changed
and no MLflow store is opened. ``--format json`` prints the same as one JSON object.

Exit code: 0 whatever is found (the command diagnoses; a missing meter is a finding,
not an error); 2 only for a bad option, as click reports it.
"""

from __future__ import annotations

import json
import textwrap
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from mlflow_green.measure.diagnose import Diagnosis

_WIDTH = 100
_INDENT = "    "
#: First words of the fix steps that are shell commands.
_COMMANDS = ("sudo", "docker", "echo", "pip", "unset", "export")


@click.command()
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="text: one paragraph per domain; json: the same findings as one JSON object.",
)
def doctor(fmt: str) -> None:
    """Show how energy would be measured here (gpu, cpu, ram), why, and how to do better.

    Always exits 0: it diagnoses.
    """
    from mlflow_green.measure.diagnose import diagnose

    found = diagnose()
    if fmt == "json":
        click.echo(json.dumps(found.to_dict(), indent=2))
    else:
        click.echo(render_text(found))


def render_text(found: Diagnosis) -> str:
    """The findings as the text ``mlflow-green doctor`` prints."""
    env = found.environment
    facts = [f"platform {env.platform}"]
    if env.container:
        facts.append(f"container ({env.container})")
    if env.virtual_machine:
        facts.append(f"virtual machine ({env.virtual_machine})")
    if env.platform.startswith("linux"):
        facts.append("GPUs on the PCI bus: " + (", ".join(env.gpus_on_pci) or "none"))
    lines = [
        "mlflow-green doctor: how autolog would measure energy on this machine",
        *_wrap("; ".join(facts), ""),
    ]
    fixes_shown: dict[str, str] = {}
    for d in found.domains:
        lines.append("")
        head = f"{d.domain}: {d.method} ({d.status})"
        lines += _wrap(f"{head} - {d.hardware}" if d.hardware else head, "")
        lines += _wrap(f"why: {d.why}", _INDENT)
        if not d.fix:
            continue
        if d.fix in fixes_shown:
            lines.append(f"{_INDENT}fix: as for {fixes_shown[d.fix]}, above")
            continue
        fixes_shown[d.fix] = d.domain
        lines.append(f"{_INDENT}fix:")
        for step in d.fix.splitlines():
            lines += _step(step)
    if found.warnings:
        lines += ["", "autolog would warn:"]
        for message in found.warnings:
            lines += _wrap(f"- {message}", _INDENT)
    return "\n".join(lines)


def _wrap(text: str, indent: str) -> list[str]:
    return textwrap.wrap(
        text, _WIDTH, initial_indent=indent, subsequent_indent=indent + "  ", break_on_hyphens=False
    ) or [indent.rstrip()]


def _step(text: str) -> list[str]:
    """A step of a fix: prose is wrapped, a command stays on one line to be copied whole."""
    indent = _INDENT + "  "
    if text.split(" ", 1)[0] in _COMMANDS:
        return [indent + text]
    return _wrap(text, indent)
