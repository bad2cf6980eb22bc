"""Griffe extension (mkdocs.yml, mkdocstrings' ``extensions``): the project's docstrings as the site shows them.

* The docstrings head their doctests ``Example:`` (Google style); griffe reads the singular as an admonition of
  Markdown text, in which ``>>>`` lines become block quotes. Renamed ``Examples:`` before parsing, the section is
  griffe's examples section: the doctest lines render as highlighted Python console code.
* Sphinx roles (``:func:`autobayes.predict```) show as the code they name (``autobayes.predict``).
"""

from __future__ import annotations

import re

import griffe

_EXAMPLE = re.compile(r"^(\s*)Example:\s*$", re.M)
_ROLE = re.compile(r":(?:func|class|mod|data|meth|attr|exc|obj|py:\w+):`~?([^`]+)`")


class ExampleSections(griffe.Extension):
    def on_instance(self, *, obj, **kwargs) -> None:
        if obj.docstring is not None:
            text = _EXAMPLE.sub(r"\1Examples:", obj.docstring.value)
            obj.docstring.value = _ROLE.sub(r"`\1`", text)
