"""Recipes in and out: YAML (``yaml.safe_load`` semantics, a key named twice refused), dotted ``--set`` overrides,
errors for people."""

from __future__ import annotations

import os
import re
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from tricklab.errors import InputError, brief
from tricklab.fsutil import atomic_write_text, require_file
from tricklab.recipe.schema import Recipe
from tricklab.registry import closest, did_you_mean

_FIELD_PREFIX = re.compile(r"^([a-z_][a-z_0-9]*): (.*)$", re.S)


def _allowed_keys(model: type[BaseModel], path: tuple[str, ...]) -> list[str]:
    """The keys a recipe may have at ``path`` (for 'unknown key' messages)."""
    for key in path:
        field = model.model_fields.get(key)
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


def key_label(key: object) -> str:
    """A mapping key as it appears in a field name: plain keys as they are, blank or odd ones quoted
    (``''``, ``' '``, ``'a\\tb'``), so a message never names an empty field."""
    text = str(key)
    return text if text.strip() and text.isprintable() and text == text.strip() else repr(text)


def validation_error_to_input_error(err: ValidationError, *, source: str = "recipe",
                                    model: type[BaseModel] = Recipe) -> InputError:
    """Turn pydantic's report into one ``InputError`` naming the first bad field and what is allowed."""
    problems: list[tuple[str, str]] = []
    for e in err.errors():
        loc = tuple(key_label(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        m = _FIELD_PREFIX.match(msg)
        if m:  # a validator that names the sub-field itself ("path: ...")
            loc, msg = loc + (m.group(1),), m.group(2)
        if e["type"] == "extra_forbidden":
            allowed = _allowed_keys(model, loc[:-1])
            msg = f"unknown key{_suggest(model, loc, allowed)}; allowed keys here: {', '.join(allowed)}"
        elif e["type"] != "missing" and not isinstance(e.get("input"), dict):
            msg += f" (got {brief(e.get('input'))})"
        problems.append((".".join(loc) or source, msg))
    field, first = problems[0]
    others = "".join(f"; also {f}: {m}" for f, m in problems[1:])
    where = "" if source == "recipe" else f" [in {source}]"
    return InputError(field, first + others + where)


def _suggest(model: type[BaseModel], loc: tuple[str, ...], allowed: list[str]) -> str:
    """" — did you mean 'optimizer.lr'?" for an unknown key at ``loc`` (empty when nothing is close)."""
    if not loc:
        return ""
    guesses = _corrected(list(loc)) if model is Recipe else []
    if guesses:
        return f" — did you mean {' or '.join(repr(g) for g in guesses)}?"
    return did_you_mean(loc[-1], allowed, prefix="".join(f"{k}." for k in loc[:-1]))


def recipe_from_dict(data: Any, *, source: str = "recipe") -> Recipe:
    """Validate a mapping as a recipe; ``InputError`` on anything wrong."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InputError(source, f"a recipe must be a mapping of sections, got {type(data).__name__}",
                         allowed=", ".join(Recipe.model_fields))
    try:
        _check_keys(data, "")
    except InputError as err:
        if source == "recipe":
            raise
        raise InputError(err.field, f"{err.problem} [in {source}]", err.allowed) from None
    try:
        return Recipe.model_validate(data)
    except ValidationError as err:
        raise validation_error_to_input_error(err, source=source) from None


def _check_keys(data: dict[Any, Any], prefix: str) -> None:
    """Refuse keys that are not text (YAML's ``1:``, ``true:``, ``null:``) where they are, before pydantic, which
    would name them by position."""
    for key, value in data.items():
        if not isinstance(key, str):
            raise InputError(f"{prefix}{key_label(key)}",
                             f"keys must be text, got {brief(key)} ({type(key).__name__})",
                             allowed="section and setting names, e.g. optimizer: {lr: 0.1}")
        if isinstance(value, dict):
            _check_keys(value, f"{prefix}{key_label(key)}.")


class DuplicateKey(yaml.YAMLError):
    """A YAML mapping names one key twice; ``path`` is where (``optimizer.lr``), ``lines`` the two lines (from 1)."""

    def __init__(self, path: str, lines: tuple[int, int]) -> None:
        self.path, self.lines = path, lines
        super().__init__(f"{path} appears twice (lines {lines[0]} and {lines[1]})")


_MERGE_TAGS = ("tag:yaml.org,2002:merge", "tag:yaml.org,2002:value")  # ``<<: *base`` merges are not duplicates


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.safe_load``'s loader (no Python tags), refusing a mapping that names one key twice.

    Plain ``safe_load`` keeps the last of ``epochs: 3`` / ``epochs: 5`` without a word, so a recipe would train
    with a value its author may not have meant. The check walks the composed node graph once before anything is
    constructed; each node is visited once however many aliases share it, so an alias bomb stays linear here."""

    def construct_document(self, node: yaml.Node) -> Any:
        self._refuse_duplicate_keys(node)
        return super().construct_document(node)

    def _refuse_duplicate_keys(self, root: yaml.Node) -> None:
        stack: list[tuple[yaml.Node, str]] = [(root, "")]
        seen: set[int] = set()
        while stack:
            node, path = stack.pop()
            if id(node) in seen:
                continue
            seen.add(id(node))
            if isinstance(node, yaml.SequenceNode):
                stack.extend((item, f"{path}{i}.") for i, item in enumerate(node.value))
            elif isinstance(node, yaml.MappingNode):
                stack.extend(self._mapping_children(node, path))

    def _mapping_children(self, node: yaml.MappingNode, path: str) -> list[tuple[yaml.Node, str]]:
        """The values of ``node`` with their paths; ``DuplicateKey`` when two scalar keys are equal as values
        (``1`` and ``0x1`` are one key, as they would be in the mapping)."""
        first_line: dict[Any, int] = {}
        children = []
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag in _MERGE_TAGS:
                children.append((value_node, path))  # a complex key is refused when constructed
                continue
            key = self.construct_object(key_node)
            label = f"{path}{key_label(key)}"
            line = key_node.start_mark.line + 1
            if key in first_line:  # a scalar's value is always hashable
                raise DuplicateKey(label, (first_line[key], line))
            first_line[key] = line
            children.append((value_node, f"{label}."))
        return children


def safe_load(text: str) -> Any:
    """``yaml.safe_load`` that raises ``DuplicateKey`` for a mapping naming one key twice."""
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass


YAML_ALLOWED = "plain YAML mappings, lists, strings and numbers (no !!python tags), each key once per mapping"


def read_yaml(path: str | os.PathLike[str], *, field: str = "recipe") -> Any:
    """Parse a YAML file safely (no Python tags); errors name the file and the line.

    ``field`` names the file in messages (``recipe``, ``study``, ``base``). Only a regular file is opened: its type
    is checked with ``stat`` first, so a FIFO or a device (which could block or never end) is refused unread. A
    key named twice in one mapping is an error named by its key path (``optimizer.lr``)."""
    if not os.path.lexists(path):  # the words the CLI has always used for a missing recipe
        hint = " (to change a setting without a file, write KEY=VALUE, e.g. optimizer.lr=0.1)" if field == "recipe" \
            else ""
        raise InputError(field, f"file not found: {path}{hint}", allowed="a YAML file")
    p = require_file(path, field, what="a YAML file")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(field, f"cannot read {p}: {err}") from None
    try:
        return safe_load(text)
    except DuplicateKey as err:
        raise InputError(err.path, f"this key appears twice in one mapping of {p} (lines {err.lines[0]} and "
                                   f"{err.lines[1]}); YAML would silently keep the last value",
                         allowed="each key once per mapping") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise InputError(field, f"malformed YAML in {p}{where}: {problem}", allowed=YAML_ALLOWED) from None
    except (RecursionError, ValueError) as err:  # nesting too deep for the parser; an integer over 4300 digits
        problem = "nested too deeply" if isinstance(err, RecursionError) else str(err).split(";")[0]
        raise InputError(field, f"unreadable YAML in {p}: {problem}",
                         allowed="plain YAML mappings, lists, strings and numbers of ordinary size") from None


def parse_overrides(pairs: list[str] | None) -> list[tuple[list[str], Any]]:
    """``["optimizer.lr=0.1"]`` → ``[(["optimizer", "lr"], 0.1)]``; values are parsed as YAML scalars."""
    parsed = []
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise InputError("--set", f"expected section.key=value, got {brief(pair)}",
                             allowed="e.g. --set optimizer.lr=0.1")
        try:
            value = safe_load(raw) if raw.strip() else ""
        except DuplicateKey as err:
            raise InputError(f"--set {key}.{err.path}", "this key appears twice in the value",
                             allowed="each key once per mapping") from None
        except (yaml.YAMLError, RecursionError, ValueError):  # not a YAML scalar: the raw text, validated as such
            value = raw
        parsed.append((key.split("."), value))
    return parsed


def apply_overrides(data: dict[str, Any], pairs: list[str] | None) -> dict[str, Any]:
    """A copy of ``data`` with dotted overrides applied; unknown keys are refused before validation."""
    import copy

    out = copy.deepcopy(data) if data else {}
    for keys, value in parse_overrides(pairs):
        _check_override_key(keys)
        node = out
        for k in keys[:-1]:
            if not isinstance(node.get(k), dict):
                node[k] = {}
            node = node[k]
        node[keys[-1]] = value
    return out


def _check_override_key(keys: list[str]) -> None:
    """Refuse a ``--set`` key that is not a recipe setting, naming the first unknown part, the nearest correct
    key (``optimzer.lr`` → ``optimizer.lr``) and the keys allowed where it went wrong."""
    model: type[BaseModel] = Recipe
    for depth, key in enumerate(keys):
        fields = model.model_fields
        annotation = getattr(fields.get(key), "annotation", None)
        is_section = isinstance(annotation, type) and issubclass(annotation, BaseModel)
        last = depth == len(keys) - 1
        if key in fields and (is_section or last):
            if last:      # a setting, or a whole section given as a mapping (--set data={name: digits})
                return
            model = annotation  # type: ignore[assignment]
            continue
        where = "section" if not last else "key"
        if key in fields:  # a setting used as a section: optimizer.lr.x
            raise InputError(f"--set {'.'.join(keys)}", f"{'.'.join(keys[:depth + 1])} is a setting, not a section; "
                                                        f"write --set {'.'.join(keys[:depth + 1])}=VALUE")
        guesses = _corrected(keys)
        hint = f" — did you mean {' or '.join(repr(g) for g in guesses)}?" if guesses else ""
        raise InputError(f"--set {'.'.join(keys)}", f"unknown {where} {brief(key)}{hint}",
                         allowed=[".".join([*keys[:depth], k]) for k in fields])


SYNONYMS = {"learning_rate": "lr", "wd": "weight_decay", "max_epochs": "epochs", "num_epochs": "epochs",
            "n_epochs": "epochs", "bs": "batch_size", "optimiser": "optimizer", "scheduler": "schedule",
            "lr_scheduler": "schedule", "dataset": "data", "initialization": "init", "initialisation": "init",
            "clipping": "clip", "gradient_clip_val": "threshold", "weight_init": "init"}
"""Other libraries' words for recipe keys (Keras' ``learning_rate``, Lightning's ``max_epochs``), for "did you
mean" where spelling alone would not find the key."""


def _corrected(keys: list[str]) -> list[str]:
    """The recipe keys a mistyped ``keys`` most likely meant: every unknown part replaced by the nearest known one
    (``optimzer.lr`` → ``optimizer.lr``), or a bare setting put in its section (``lr`` → ``optimizer.lr``,
    ``patience`` → ``schedule.patience`` or ``early_stopping.patience``). Empty when nothing is close."""
    whole = _spelled(Recipe, keys)
    if whole:
        return [whole]
    if len(keys) == 1:   # a setting without its section, as Hydra and Keras users write it
        sections = [(name, f.annotation) for name, f in Recipe.model_fields.items()
                    if isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel)]
        key = SYNONYMS.get(keys[0], keys[0])
        exact = [f"{name}.{key}" for name, section in sections if key in section.model_fields]
        if exact:     # lr → optimizer.lr; a spelling near some other section's key is no rival
            return exact[:3]
        near = [(name, _spelled(section, keys)) for name, section in sections]
        return [f"{name}.{leaf}" for name, leaf in near if leaf][:3]
    return []


def recipe_key_guesses(word: str) -> list[str]:
    """The recipe keys a word typed as something else most likely meant (a flag: ``--epoch`` → ``epochs``,
    ``--learning-rate`` → ``optimizer.lr``); empty when none is close."""
    keys = word.strip().lstrip("-").replace("-", "_").split(".")
    return _corrected(keys) if all(keys) else []


def _spelled(model: Any, keys: list[str]) -> str | None:
    """``keys`` below ``model`` with each part known, a synonym, or replaced by the nearest known key; None when a
    part has no match or the path does not end at a setting."""
    out = []
    for key in keys:
        if model is None:
            return None
        fields = model.model_fields
        match = key if key in fields else SYNONYMS.get(key) if SYNONYMS.get(key) in fields else closest(key, fields)
        if match is None:
            return None
        out.append(match)
        annotation = fields[match].annotation
        model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    return ".".join(out) if model is None else None


def load_recipe(path: str | os.PathLike[str] | None = None, overrides: list[str] | None = None) -> Recipe:
    """The recipe at ``path`` (or the built-in default) with ``--set`` overrides applied and validated."""
    data = read_yaml(path) if path is not None else {}
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InputError("recipe", f"{path} must hold a mapping of sections, got {type(data).__name__}",
                         allowed=", ".join(Recipe.model_fields))
    return recipe_from_dict(apply_overrides(data, overrides), source=str(path) if path else "recipe")


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    """Plain data (JSON/YAML-able) of a recipe, every field resolved."""
    return recipe.model_dump(mode="json")


def save_recipe(recipe: Recipe, path: str | os.PathLike[str], *, lr_found: float | None = None) -> None:
    """Write the resolved recipe as YAML, atomically. ``lr_found``: the η an ``optimizer.lr: auto`` run chose,
    written as a comment on that line — the recipe stays as written (its identity), a reader sees the η."""
    text = yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False)
    if lr_found is not None:
        text = text.replace("\n  lr: auto\n", f"\n  lr: auto  # the range test chose {lr_found:.4g} (lr_find.json); "
                                                "the run trains with it\n", 1)
    atomic_write_text(path, text)
