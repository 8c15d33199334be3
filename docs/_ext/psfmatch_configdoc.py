"""Sphinx directive ``psfmatch-config-fields``: a table of a config class's fields, generated from the code.

Usage::

    .. psfmatch-config-fields:: psfmatch.config.ModelPsfMatchConfig

Every field's name, type, default, allowed values and doc come from the
field objects themselves, so the page cannot drift from the code.
"""

from __future__ import annotations

import importlib

from docutils import nodes
from docutils.parsers.rst import Directive
from docutils.statemachine import StringList


def _import(path):
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def field_rows(config_class, prefix=""):
    """``(name, type, default, allowed, doc)`` for every field of ``config_class`` (recursing into choices)."""
    from psfmatch.config import ChoiceField, ConfigChoiceField, ListField, RangeField

    rows = []
    instance = config_class()
    for name, field in config_class._fields().items():
        full = f"{prefix}{name}"
        if isinstance(field, ConfigChoiceField):
            allowed = ", ".join(f"``{k}`` ({v.__name__})" for k, v in field.typemap.items())
            rows.append((full, "choice", f"``{field.default}``", allowed, field.doc))
            continue
        default = getattr(instance, name)
        if isinstance(default, tuple):
            default = list(default)
        if isinstance(field, ChoiceField):
            allowed = "; ".join(f"``{k!r}``: {_escape(v)}" for k, v in field.allowed.items())
        elif isinstance(field, (RangeField, ListField)) or field.check_doc:
            allowed = _escape(field.check_doc or "")
        else:
            allowed = ""
        rows.append((full, field.type_name(), f"``{default!r}``", allowed, field.doc))
    return rows


def _escape(text):
    """Escape characters that reStructuredText would read as markup in plain field docs."""
    out = str(text)
    for ch in ("\\", "|", "*", "_", "`"):
        out = out.replace(ch, "\\" + ch)
    return out


def rst_table(rows, title=None):
    lines = [".. list-table::" + (f" {title}" if title else ""), "   :header-rows: 1", "   :widths: 18 8 10 24 40", "",
             "   * - Field", "     - Type", "     - Default", "     - Allowed values", "     - Description"]
    for name, typ, default, allowed, doc in rows:
        lines += [f"   * - ``{name}``", f"     - {typ}", f"     - {default}", f"     - {allowed or '--'}",
                  f"     - {_escape(doc)}"]
    return lines


class ConfigFieldsDirective(Directive):
    required_arguments = 1
    has_content = False

    def run(self):
        cls = _import(self.arguments[0])
        lines = rst_table(field_rows(cls))
        node = nodes.section()
        node.document = self.state.document
        self.state.nested_parse(StringList(lines, source="psfmatch-config-fields"), self.content_offset, node)
        return node.children


def setup(app):
    app.add_directive("psfmatch-config-fields", ConfigFieldsDirective)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
