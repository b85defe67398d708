"""The one YAML reader for every file gpuwarden loads (``gpuwarden.yaml``, cluster
files, the owners file, the shipped rules): safe, strict about repeated keys, and with
one-line errors that name the file, the line and the fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode

from gpuwarden.errors import GpuwardenError


class YamlFileError(GpuwardenError):
    """A YAML file could not be read or parsed: ``source: problem; fix``."""

    def __init__(self, source: str, problem: str, fix: str) -> None:
        super().__init__(f"{source}: {problem}; {fix}")
        self.problem, self.fix = problem, fix


class _RepeatedKey(yaml.YAMLError):
    def __init__(self, key: Any, first: yaml.Mark, again: yaml.Mark) -> None:
        super().__init__(f"key {key!r} repeated")
        self.key, self.first, self.again = key, first, again


class StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a mapping holding the same key twice (PyYAML keeps
    the last one silently).  Keys merged in with ``<<`` may still be overridden."""

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Mark] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=False)
            try:
                first = seen.setdefault(key, key_node.start_mark)
            except TypeError:  # an unhashable key: SafeLoader refuses it itself
                continue
            if first is not key_node.start_mark:
                raise _RepeatedKey(key, first, key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str, source: str) -> Any:
    """The YAML document in ``text``; ``source`` names it in errors."""
    try:
        return yaml.load(text, Loader=StrictLoader)  # a SafeLoader subclass: safe
    except _RepeatedKey as exc:
        raise YamlFileError(
            source, f"key {exc.key!r} appears twice, at line {exc.first.line + 1} and at line "
            f"{exc.again.line + 1}", "keep one of them") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise YamlFileError(source, f"not valid YAML{where}", "fix the syntax") from None


def read_yaml(path: Path, source: str | None = None) -> Any:
    """The YAML document in the file at ``path`` (UTF-8); ``source`` names it in errors
    (default: the path)."""
    source = source or str(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise YamlFileError(source, f"cannot read it ({exc.strerror})",
                            "give the path of a readable YAML file") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise YamlFileError(source, f"not UTF-8 text (byte 0x{data[exc.start]:02x} at line "
                            f"{line})", "save the file as UTF-8") from None
    return parse_yaml(text, source)
