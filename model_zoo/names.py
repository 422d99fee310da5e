"""Name rules: what a model name and a file name inside a model folder may be.

Both rules are strict allow-lists, checked on every name we are given (CLI, Python API) and on
every name we read from an index (an HTTP zoo's index is untrusted input): no path separators,
no ``..``, no absolute paths, no leading dot, nothing a shell or URL would need to quote.
"""
from __future__ import annotations

import re

from transfer.errors import UserError

MODEL_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9._-]{0,62}[a-z0-9])?$")
FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
MODEL_NAME_RULE = ("1-64 lowercase letters, digits, '.', '_' or '-', starting and ending with a letter "
                   "or digit (no '/', no '..', no absolute path)")


RESERVED = frozenset({"index.json"})  # the zoo's own file at its top level (.lock, .staging start with a dot)


def check_name(name: object) -> str:
    """Return ``name`` if it is a valid model name, else raise :class:`UserError`."""
    if not isinstance(name, str) or not MODEL_NAME.fullmatch(name) or ".." in name:
        raise UserError(f"invalid zoo model name {name!r}: use {MODEL_NAME_RULE}")
    if name in RESERVED:
        raise UserError(f"invalid zoo model name {name!r}: reserved for the zoo's own files")
    return name


FOLDER_TOKEN = re.compile(r"^[a-z0-9]{4,32}$")


def check_folder(name: str, folder: object, where: str = "") -> str:
    """The folder an index entry keeps its files in: ``NAME`` or, after a ``--force`` replacement,
    ``NAME~TOKEN``; nothing else (an HTTP index is untrusted)."""
    if folder == name:
        return name
    base, sep, token = folder.rpartition("~") if isinstance(folder, str) else ("", "", "")
    if not sep or base != name or not FOLDER_TOKEN.fullmatch(token):
        raise UserError(f"invalid folder {folder!r} for zoo model {name!r}{' in ' + where if where else ''}: "
                        f"expected {name!r} or {name + '~TOKEN'!r}")
    return folder


def check_file_name(name: object, where: str = "") -> str:
    """Return ``name`` if it is a valid flat file name inside a model folder."""
    if not isinstance(name, str) or not FILE_NAME.fullmatch(name) or ".." in name:
        raise UserError(f"invalid file name {name!r}{' in ' + where if where else ''}: "
                        "expected a plain file name (letters, digits, '.', '_', '-'; no path)")
    return name
