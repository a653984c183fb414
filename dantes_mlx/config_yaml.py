"""Reading a YAML settings file strictly: UTF-8 text, no repeated key, bounded anchors, the line of every setting."""

from __future__ import annotations

from pathlib import Path

import yaml

from dantes_mlx.errors import ConfigError

# Values a file may hold once its aliases are expanded: a dantes.yaml has about a hundred; a "billion laughs"
# file (aliases of aliases) would hold billions and hang whatever walks it (dataclasses.asdict, json.dumps).
MAX_YAML_VALUES = 10_000


def read_yaml(path: Path) -> tuple[object, dict]:
    """(data, lines) of a YAML file: lines maps (section, key) and (section, None) to 1-based line numbers."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text (byte {exc.start}): is this a YAML settings file?", path=path,
                          fix="save it as UTF-8 text, or write a new one with `dantes-mlx init -o FILE`") from None
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return {}, {}
        _check_keys(root, path, set(), "section")
        _check_size(root, path)
        return loader.construct_document(root), _lines(root)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ConfigError(f"invalid YAML: {getattr(exc, 'problem', None) or exc}", path=path,
                          line=mark.line + 1 if mark else None, fix="fix the YAML syntax") from None
    finally:
        loader.dispose()


def _check_keys(node: yaml.Node, path: Path, seen: set[int], what: str = "key") -> None:
    """Refuse a key given twice in one mapping: YAML keeps the last silently, dropping the first."""
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first: dict = {}
        for key, _ in node.value:
            if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
                continue
            line = key.start_mark.line + 1
            if (key.tag, key.value) in first:
                raise ConfigError(f"{what} '{key.value}' is given twice (first at line {first[key.tag, key.value]}); "
                                  "YAML would silently drop the first", path=path, line=line,
                                  fix=f"merge the two '{key.value}:' entries into one")
            first[key.tag, key.value] = line
    for child in _children(node):
        _check_keys(child, path, seen)


def _children(node: yaml.Node) -> list:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_size(root: yaml.Node, path: Path) -> None:
    """Refuse a file whose anchors and aliases expand to more than MAX_YAML_VALUES values, or refer to themselves."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: yaml.Node) -> int:
        if id(node) in sizes:
            return sizes[id(node)]
        if id(node) in open_nodes:
            raise ConfigError("an alias refers to the value that contains it (an endless structure)", path=path,
                              line=node.start_mark.line + 1, fix="remove that alias (*name)")
        open_nodes.add(id(node))
        total = 1
        for child in _children(node):
            total += size(child)
            if total > MAX_YAML_VALUES:
                raise ConfigError(f"anchors and aliases expand to more than {MAX_YAML_VALUES:,} values", path=path,
                                  line=node.start_mark.line + 1,
                                  fix="write the settings out instead of nesting aliases (*name) of aliases")
        open_nodes.discard(id(node))
        sizes[id(node)] = total
        return total

    size(root)


def _lines(root: yaml.Node) -> dict:
    """(section, key) -> line of that key, and (section, None) -> line of the section."""
    lines: dict = {}
    if isinstance(root, yaml.MappingNode):
        for sec, body in root.value:
            lines[(str(sec.value), None)] = sec.start_mark.line + 1
            if isinstance(body, yaml.MappingNode):
                for key, _ in body.value:
                    lines[(str(sec.value), str(key.value))] = key.start_mark.line + 1
    return lines
