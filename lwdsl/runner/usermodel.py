"""Your own model: ``--model path/to/file.py:NAME`` or ``--model package.module:NAME``.

Importing your code is an act of yours: it happens only for a ``--model`` you give on the
command line (or a model reference you pass to :func:`lwdsl.run`), never because a recipe says
so (a ``target`` line naming code is refused: a recipe can never run code). ``NAME`` is:

- a model object (an ``nn.Module``, a ``keras.Model``): used as it is (the backend copies it);
- a class or a function that returns one: called with no argument, or with ``input_shape=``
  (C, H, W) and ``num_classes=`` when it takes them (by those names, or ``**kwargs``).

Every mistake is a :class:`~lwdsl.errors.UsageError` (exit 2) that names the file or module and
the name: a missing file, a file that does not import (its error and line), a missing name
(with a did-you-mean), a factory that needs other arguments or raises, an object that is not a
model of the backend. ``--checkpoint`` then loads trained weights into it, as for any model.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import re
import sys
import traceback
from pathlib import Path
from typing import Any, Optional

from ..errors import UsageError, did_you_mean

__all__ = ["is_code_ref", "load_user_model", "code_digest"]

#: ``file.py:NAME`` or ``package.module:NAME`` (the frameworks' own prefixes excluded).
_REF = re.compile(r"^(?P<where>[^:]+\.py|[A-Za-z_][\w]*(?:\.[A-Za-z_][\w]*)*):(?P<name>[A-Za-z_]\w*)$")
_FRAMEWORK_PREFIXES = ("torchvision:", "keras:")


def is_code_ref(ref: Any) -> bool:
    """True for ``file.py:NAME`` and ``package.module:NAME`` (not ``torchvision:NAME``)."""
    return isinstance(ref, str) and not ref.startswith(_FRAMEWORK_PREFIXES) and _REF.match(ref) is not None


def code_digest(ref: str) -> Optional[str]:
    """The sha256 of a ``file.py:NAME`` reference's file (for the lock file and the baseline
    cache key), or None for a module reference."""
    where = _REF.match(ref)
    if where is None or not where["where"].endswith(".py"):
        return None
    path = Path(where["where"])
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _where_in(exc: BaseException, path: Optional[Path]) -> str:
    """``file:line`` of the deepest frame of ``exc`` in the user's file (or a syntax error's)."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{exc.filename}:{exc.lineno}"
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if path is None or Path(f.filename) == path]
    return f"{frames[-1].filename}:{frames[-1].lineno}" if frames else ""


def _import(ref: str, where: str) -> Any:
    if where.endswith(".py"):
        path = Path(where).resolve()
        if not path.is_file():
            raise UsageError(f"--model {ref}: there is no file {where} (looked at {path})",
                             hint="give the path to your model's .py file, relative to the current folder")
        name = f"lwdsl_user_{hashlib.sha1(str(path).encode()).hexdigest()[:12]}"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        sys.path.insert(0, str(path.parent))  # the file's own imports of its neighbours work
        try:
            spec.loader.exec_module(module)
        except BaseException as exc:
            sys.modules.pop(name, None)
            if isinstance(exc, KeyboardInterrupt):
                raise
            at = _where_in(exc, path)
            raise UsageError(f"--model {ref}: importing {where} failed{' at ' + at if at else ''}: {_first_line(exc)}",
                             hint="fix the file (run it with python to see the whole traceback, or add --debug)") from exc
        finally:
            sys.path.remove(str(path.parent))
        return module
    try:
        return importlib.import_module(where)
    except ModuleNotFoundError as exc:
        raise UsageError(f"--model {ref}: no module named '{exc.name}' can be imported",
                         hint="install the package, or give a file: --model path/to/file.py:NAME") from None
    except Exception as exc:
        raise UsageError(f"--model {ref}: importing {where} failed: {_first_line(exc)}") from exc


def _call(ref: str, factory: Any, input_shape: tuple[int, ...], num_classes: int) -> Any:
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = {}
    given = {"input_shape": tuple(input_shape), "num_classes": int(num_classes)}
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    kwargs = {k: v for k, v in given.items() if takes_any or k in params}
    missing = [p.name for p in params.values()
               if p.default is inspect.Parameter.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in kwargs]
    if missing:
        raise UsageError(f"--model {ref}: {ref.rsplit(':', 1)[1]} needs {', '.join(missing)}, which lwdsl cannot give",
                         hint="take no argument, or only input_shape= (C, H, W) and num_classes=; or give a built model object")
    try:
        return factory(**kwargs)
    except Exception as exc:
        raise UsageError(f"--model {ref}: calling {ref.rsplit(':', 1)[1]}({', '.join(f'{k}=...' for k in kwargs)}) raised "
                         f"{_first_line(exc)}") from exc


def load_user_model(ref: str, input_shape: tuple[int, ...], num_classes: int, is_model: Any) -> Any:
    """The model object ``ref`` names (see the module docstring); ``is_model(obj)`` says whether
    the backend takes ``obj`` as a model (its framework's model class)."""
    match = _REF.match(ref)
    if match is None:
        raise UsageError(f"--model {ref}: write path/to/file.py:NAME or package.module:NAME")
    module = _import(ref, match["where"])
    name = match["name"]
    if not hasattr(module, name):
        public = [n for n in vars(module) if not n.startswith("_")]
        near = did_you_mean(name, public)
        raise UsageError(f"--model {ref}: {match['where']} has no '{name}'",
                         hint=f"did you mean '{near}'?" if near else f"it defines: {', '.join(public[:12]) or 'nothing public'}")
    obj = getattr(module, name)
    if not is_model(obj):
        if not callable(obj):
            raise UsageError(f"--model {ref}: '{name}' is a {type(obj).__name__}, not a model, a model class or a function returning one")
        obj = _call(ref, obj, input_shape, num_classes)
        if not is_model(obj):
            raise UsageError(f"--model {ref}: {name}(...) returned a {type(obj).__name__}, not a model of this backend")
    return obj
