"""Compiling step code inside the worker: size and shape caps, RestrictedPython's transformer
plus Portico's own refusals, and a cache of compiled code keyed by the code text.

The step's code is the body of `def step(input):`; line numbers stay those of the code.
"""

from __future__ import annotations

import ast
import sys
from collections import OrderedDict
from types import CodeType
from typing import NamedTuple

from RestrictedPython import compile_restricted_function
from RestrictedPython.transformer import RestrictingNodeTransformer

STEP_FILENAME = "<step>"
STEP_FUNCTION = "step"
COMPILE_RECURSION_LIMIT = 4000


class Compiled(NamedTuple):
    code: CodeType | None
    error: str | None
    kind: str


class StepTransformer(RestrictingNodeTransformer):
    """RestrictedPython's transformer with Portico's extra refusals."""

    def visit_ClassDef(self, node: ast.ClassDef) -> ast.AST:
        self.error(node, "class definitions are not allowed in steps; use dicts and functions.")
        return node

    def visit_Global(self, node: ast.Global) -> ast.AST:
        for name in node.names:
            self.check_name(node, name)
        return self.node_contents_visit(node)


def _bound_names(node: ast.AST) -> list[str]:
    """Every name a node binds, whatever the syntax (defence in depth for hook shadowing)."""
    if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
        return [node.id]
    if isinstance(node, ast.arg):
        return [node.arg]
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [node.name]
    if isinstance(node, ast.alias):
        return [node.asname or node.name.partition(".")[0]]
    if isinstance(node, ast.ExceptHandler) and node.name:
        return [node.name]
    if isinstance(node, (ast.Global, ast.Nonlocal)):
        return list(node.names)
    for field in ("name", "rest"):  # match patterns (MatchAs, MatchStar, MatchMapping)
        value = getattr(node, field, None)
        if isinstance(value, str) and isinstance(node, ast.pattern):
            return [value]
    return []


def check_size(tree: ast.AST, max_nodes: int, max_depth: int) -> str | None:
    """Node count and nesting depth, walked without recursion (before anything recursive)."""
    count = 0
    # (node, depth, line of the nearest node that has one: contexts like Load have none)
    stack: list[tuple[ast.AST, int, int]] = [(tree, 0, 1)]
    while stack:
        node, depth, line = stack.pop()
        line = getattr(node, "lineno", line)
        count += 1
        if count > max_nodes:
            return f"code is too large: more than {max_nodes} syntax nodes; split the step"
        if depth > max_depth:
            return (
                f"code is nested too deeply at line {line} (more than {max_depth} levels); "
                "use helper functions or loops"
            )
        stack.extend((child, depth + 1, line) for child in ast.iter_child_nodes(node))
    return None


def check_names(tree: ast.AST) -> str | None:
    """No binding of a name starting with "_", by any syntax (hooks cannot be shadowed)."""
    for node in ast.walk(tree):
        for name in _bound_names(node):
            if name.startswith("_") and name != "_":
                line = getattr(node, "lineno", "?")
                return f'Line {line}: "{name}" is an invalid variable name: it starts with "_"'
    return None


def _syntax_error(error: SyntaxError) -> Compiled:
    where = f"line {error.lineno}" if error.lineno else "unknown line"
    text = f": {error.text.strip()}" if error.text and error.text.strip() else ""
    return Compiled(None, f"syntax error at {where}: {error.msg}{text}", "syntax")


def _compile(code: str, max_source_bytes: int, max_nodes: int, max_depth: int) -> Compiled:
    size = len(code.encode("utf-8", "surrogatepass"))
    if size > max_source_bytes:
        return Compiled(
            None,
            f"code is too long: {size} bytes, limit {max_source_bytes}; move data into the input",
            "too_large",
        )
    try:
        tree = ast.parse(code, STEP_FILENAME, "exec")
    except SyntaxError as error:
        return _syntax_error(error)
    size_error = check_size(tree, max_nodes, max_depth)
    if size_error:
        return Compiled(None, size_error, "too_large")
    names_error = check_names(tree)  # before the transformer adds its own "_" names
    result = compile_restricted_function(
        "input", tree, STEP_FUNCTION, filename=STEP_FILENAME, policy=StepTransformer
    )
    if result.errors or names_error:
        reasons = list(result.errors) or [names_error]
        return Compiled(None, "code not allowed: " + "; ".join(reasons), "forbidden")
    if result.code is None:
        return Compiled(None, "code not allowed: the compiler returned nothing", "forbidden")
    return Compiled(result.code, None, "")


def compile_step(code: str, max_source_bytes: int, max_nodes: int, max_depth: int) -> Compiled:
    """Compile one step; never raises (a long `1+1+…` raises RecursionError in compilers)."""
    previous = sys.getrecursionlimit()
    sys.setrecursionlimit(COMPILE_RECURSION_LIMIT)
    try:
        return _compile(code, max_source_bytes, max_nodes, max_depth)
    except (RecursionError, MemoryError):
        return Compiled(
            None,
            "code is nested too deeply or too large to compile; use helper functions or loops",
            "too_large",
        )
    except SyntaxError as error:  # e.g. "return outside function" raised by compile()
        return _syntax_error(error)
    except BaseException as error:  # nothing from compiling may escape
        return Compiled(None, f"code could not be compiled: {type(error).__name__}", "forbidden")
    finally:
        sys.setrecursionlimit(previous)


class CompileCache:
    """Compiled code by code text, least recently used first out."""

    def __init__(self, size: int, max_source_bytes: int, max_nodes: int, max_depth: int) -> None:
        self._size = size
        self._limits = (max_source_bytes, max_nodes, max_depth)
        self._entries: OrderedDict[str, Compiled] = OrderedDict()

    def get(self, code: str) -> tuple[Compiled, bool]:
        """(compiled, was it cached)."""
        entry = self._entries.get(code)
        if entry is not None:
            self._entries.move_to_end(code)
            return entry, True
        entry = compile_step(code, *self._limits)
        self._entries[code] = entry
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)
        return entry, False

    def clear(self) -> None:
        self._entries.clear()
