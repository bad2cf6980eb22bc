"""MkDocs hooks (``hooks:`` in mkdocs.yml): what the site takes from the code and the repository at build time.

* ``<!-- cli: COMMAND -->`` in a page becomes the usage line and a table of every flag of ``autobayes COMMAND``,
  read from the argparse parser the command itself runs (:func:`autobayes.cli.build_parser`): the tables cannot
  drift from the code.
* ``benchmarks/figures/*.png`` are added to the site as ``benchmarks/figures/...``, beside the page that includes
  ``benchmarks/RESULTS.md``, so its image links resolve as they do on GitHub.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[1]
CLI_MARKER = re.compile(r"^<!-- cli: (\w+) -->$", re.M)


def on_files(files, config):
    for figure in sorted((ROOT / "benchmarks" / "figures").glob("*.png")):
        files.append(File.generated(config, f"benchmarks/figures/{figure.name}", abs_src_path=str(figure)))
    return files


def on_page_markdown(markdown, page, config, files):
    return CLI_MARKER.sub(lambda m: cli_reference(m.group(1)), markdown)


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def cli_reference(command: str) -> str:
    """The usage line and the flag tables (one per argument group) of ``autobayes COMMAND``, as Markdown."""
    from autobayes.cli import build_parser

    parser = build_parser().commands.get(command)
    if parser is None:
        raise ValueError(f"<!-- cli: {command} -->: autobayes has no command {command!r}")
    formatter = parser._get_formatter()
    wrapped = argparse.HelpFormatter(prog=parser.prog, width=78)  # fits the page; the same on every machine
    wrapped.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups)
    usage = wrapped.format_help().strip()
    out = [_cell(parser.description or ""), "", f"```text\n{usage}\n```", ""]
    for group in parser._action_groups:
        actions = [a for a in group._group_actions if not isinstance(a, argparse._HelpAction)]
        if not actions:
            continue
        title = {"positional arguments": "Arguments", "options": "Options"}.get(group.title, group.title or "")
        out += [f"**{title[:1].upper() + title[1:]}**", "", "| flag | value | default | meaning |", "|---|---|---|---|"]
        for action in actions:
            flags = ", ".join(f"`{s}`" for s in action.option_strings) or f"`{action.metavar or action.dest}`"
            takes_value = action.nargs != 0
            value = _cell(formatter._format_args(action, action.dest.upper())) if takes_value else ""
            if action.choices is not None and takes_value:
                value = ", ".join(f"`{c}`" for c in action.choices)
            elif value and not action.option_strings and value == (action.metavar or action.dest):
                value = ""  # a positional argument: its name is in the first column already
            elif value:
                value = f"`{value}`"
            default = action.default
            hidden = default is None or default is False or default == [] or default == argparse.SUPPRESS
            shown = "" if hidden or not action.option_strings else f"`{default}`"
            meaning = _cell(formatter._expand_help(action)) if action.help else ""
            if shown:  # the column shows it: "(default: 30)" at the end of the help would say it twice
                meaning = meaning.replace(f" (default: {default})", "")
            out.append(f"| {flags} | {value} | {_cell(shown)} | {meaning} |")
        out.append("")
    return "\n".join(out)
