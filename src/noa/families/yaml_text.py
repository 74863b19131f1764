"""Reading a family file's YAML: numbers as a researcher writes them, no key silently dropped,
and an error that points at the line the mistake is on.

PyYAML follows YAML 1.1, where ``1e-4`` (no dot) is text and a key given twice keeps its last
value without a word; a family file is read the YAML 1.2 way on both counts. Its marks are
0-based, and a problem found at the end of the file sits on a line after the last one written.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

# YAML 1.2's core-schema float: a dot or an exponent (or both), so 1e-4, 1.5E3 and .5 are numbers.
_FLOAT_12 = re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$")


class DuplicateKey(yaml.YAMLError):
    """A mapping names one key twice: ``first`` and ``second`` are its 1-based lines."""

    def __init__(self, key: str, first: int, second: int) -> None:
        super().__init__(f"{key!r} appears twice (lines {first} and {second})")
        self.key, self.first, self.second = key, first, second


class FamilyLoader(yaml.SafeLoader):
    """The safe loader, reading floats the YAML 1.2 way and refusing a key given twice."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[str, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue
            line = key_node.start_mark.line + 1
            if key_node.value in seen:
                raise DuplicateKey(key_node.value, seen[key_node.value], line)
            seen[key_node.value] = line
        return super().construct_mapping(node, deep=deep)


# Appended after the YAML 1.1 resolvers, so it only takes what they left as text.
FamilyLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_12, list("-+0123456789."))


def parse(text: str) -> Any:
    """``text`` as plain data; a yaml.YAMLError (DuplicateKey among them) for a mistake."""
    return yaml.load(text, Loader=FamilyLoader)  # FamilyLoader is a SafeLoader


def where_and_what(err: yaml.YAMLError, text: str) -> str:
    """Where and what a YAML syntax error is, 1-based: "at line L, column C: PROBLEM (CONTEXT from
    line L', column C')"; a problem found past the last written line is placed at its end."""
    mark, problem = getattr(err, "problem_mark", None), getattr(err, "problem", None)
    if mark is None or problem is None:
        return f": {str(err).splitlines()[0]}"
    written = text.rstrip().splitlines()
    if mark.index >= len(text.rstrip()) and written:
        at = f" at the end of line {len(written)}"
    else:
        at = f" at line {mark.line + 1}, column {mark.column + 1}"
    context, context_mark = getattr(err, "context", None), getattr(err, "context_mark", None)
    opened = ""
    if context and context_mark is not None and context_mark.line != mark.line:
        opened = f" ({context} from line {context_mark.line + 1}, column {context_mark.column + 1})"
    return f"{at}: {problem}{opened}"
