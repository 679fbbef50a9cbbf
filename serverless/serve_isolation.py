"""Load a function directory's code beside others in one process, each with its own modules and
environment, without changing ``sys.path``, other functions' ``sys.modules`` entries or
``os.environ``.

Under Nuclio every function is a process of its own: its directory is on ``sys.path`` (so
``main.py`` may ``import model_handler`` from beside it) and its ``spec.env`` is the process
environment. ``autolabel serve`` hosts several functions in one process, so `FunctionModules`
gives each what Nuclio would, privately:

- **Modules.** ``main.py`` is loaded with importlib from its file as ``<package>.main``, where
  ``<package>`` is a name unique to this function (``_autolabel_fn_<name>_<n>``) standing for
  its directory. An import statement in the function's own modules that names a module or
  package in the directory (``import helper``, ``from model_handler import ModelHandler``) gets
  ``<package>.helper``; two functions may each have a ``helper.py``. Every other import is the
  normal one. This works through the ``__import__`` in the builtins of the function's modules,
  so it holds for imports run later too (inside ``handler``), and ``sys.path`` is never touched.
  `FunctionModules.unload` removes the ``<package>.*`` entries from ``sys.modules``.
- **Environment.** The function's modules see ``os.environ`` and ``os.getenv`` as a
  `FunctionEnviron`: the process environment with the function's ``spec.env`` laid over it
  (variables the process already had when the host was created win, so a developer's exports
  beat the yaml). Writes and deletions stay in that view. Code outside the function's modules
  (libraries, the model loader) sees the process environment; the host hands the function's
  view to the model loader explicitly (`serverless.serve_function.function_environ`).

Limits: a library that reads the process environment itself (``HF_HUB_OFFLINE`` in
huggingface_hub, ``TOKENIZERS_PARALLELISM``), a subprocess the function starts, or
``importlib.import_module("helper")`` called by the function does not see these; export such
variables before ``autolabel serve``.
"""

from __future__ import annotations

import builtins
import importlib.machinery
import importlib.util
import itertools
import os
import re
import sys
import threading
import types
from collections.abc import Iterator, Mapping, MutableMapping
from pathlib import Path
from typing import Any

__all__ = ["FunctionEnviron", "FunctionModules"]

_real_import = builtins.__import__
_counter = itertools.count(1)


class FunctionEnviron(MutableMapping[str, str]):
    """``os.environ`` as one function sees it: its own variables over the process environment
    (read live, so later changes to the process environment show), private writes and deletions."""

    def __init__(self, own: Mapping[str, str], process: Mapping[str, str] | None = None) -> None:
        self._own = dict(own)
        self._hidden: set[str] = set()
        self._process = os.environ if process is None else process

    def __getitem__(self, key: str) -> str:
        if key in self._hidden:
            raise KeyError(key)
        if key in self._own:
            return self._own[key]
        return self._process[key]

    def __setitem__(self, key: str, value: str) -> None:
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"environment names and values must be str, got {type(key).__name__}: {type(value).__name__}")
        self._own[key] = value
        self._hidden.discard(key)

    def __delitem__(self, key: str) -> None:
        if key not in self:
            raise KeyError(key)
        self._own.pop(key, None)
        self._hidden.add(key)

    def __iter__(self) -> Iterator[str]:
        for key in dict.fromkeys([*self._own, *self._process]):
            if key not in self._hidden:
                yield key

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def copy(self) -> dict[str, str]:
        return dict(self)

    def __repr__(self) -> str:
        return f"FunctionEnviron({len(self._own)} own variables over the process environment)"


class _OsView(types.ModuleType):
    """The ``os`` module as a function's code sees it: ``environ`` and ``getenv`` are the
    function's `FunctionEnviron`; everything else is the real ``os``."""

    def __init__(self, environ: FunctionEnviron) -> None:
        super().__init__("os", os.__doc__)
        self.environ = environ

    def getenv(self, key: str, default: str | None = None) -> str | None:
        return self.environ.get(key, default)

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def __dir__(self) -> list[str]:
        return sorted(set(dir(os)) | {"environ", "getenv"})


class FunctionModules:
    """The private module namespace of one function directory (see the module docstring)."""

    def __init__(self, name: str, directory: Path, environ: FunctionEnviron) -> None:
        self.directory = directory
        self.package = f"_autolabel_fn_{re.sub(r'[^0-9A-Za-z_]', '_', name)}_{next(_counter)}"
        self.environ = environ
        self._os = _OsView(environ)
        self._builtins = {**vars(builtins), "__import__": self._import}
        self._local: dict[str, bool] = {}
        self._lock = threading.RLock()  # one import of a module at a time, even from threads the function starts
        root = types.ModuleType(self.package, f"function {name}: the modules of {directory}")
        root.__path__ = [str(directory)]
        root.__spec__ = importlib.machinery.ModuleSpec(self.package, None, is_package=True)
        root.__spec__.submodule_search_locations = [str(directory)]
        root.__package__ = self.package
        self._root = root
        sys.modules[self.package] = root

    def load(self, module: str) -> types.ModuleType:
        """Import ``module`` (a dotted name relative to the directory, e.g. ``main``)."""
        return self._load(f"{self.package}.{module}")

    def unload(self) -> None:
        """Remove this function's modules from ``sys.modules`` (the objects live on while used)."""
        prefix = self.package + "."
        for key in [k for k in sys.modules if k == self.package or k.startswith(prefix)]:
            sys.modules.pop(key, None)

    # ------------------------------------------------------------- importing
    def _is_local(self, top: str) -> bool:
        """Whether ``top`` is a module or regular package in the function's directory."""
        known = self._local.get(top)
        if known is None:
            spec = importlib.machinery.PathFinder.find_spec(top, [str(self.directory)])
            known = self._local[top] = spec is not None and spec.loader is not None
        return known

    def _load(self, fullname: str) -> types.ModuleType:
        if fullname == self.package:
            return self._root
        loaded = sys.modules.get(fullname)
        if loaded is not None:
            return loaded
        with self._lock:
            loaded = sys.modules.get(fullname)
            return loaded if loaded is not None else self._exec(fullname)

    def _exec(self, fullname: str) -> types.ModuleType:
        parent_name, _, leaf = fullname.rpartition(".")
        parent = self._load(parent_name)
        spec = importlib.machinery.PathFinder.find_spec(fullname, getattr(parent, "__path__", None) or [])
        if spec is None:
            shown = fullname[len(self.package) + 1 :]
            raise ModuleNotFoundError(f"No module named {shown!r} in {self.directory}", name=fullname)
        module = importlib.util.module_from_spec(spec)  # a folder without __init__.py: a namespace package
        module.__dict__["__builtins__"] = self._builtins  # this module's imports come back here
        sys.modules[fullname] = module
        try:
            if module.__spec__ is not None and module.__spec__.loader is not None:
                module.__spec__.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(fullname, None)
            raise
        setattr(parent, leaf, module)
        return module

    def _from_list(self, module: types.ModuleType, fromlist: Any) -> None:
        """``from package import sub``: load the submodules named in ``fromlist``."""
        if not hasattr(module, "__path__"):
            return
        names = list(fromlist)
        if "*" in names:
            names = [n for n in names if n != "*"] + list(getattr(module, "__all__", []))
        for item in names:
            if not hasattr(module, item):
                try:
                    self._load(f"{module.__name__}.{item}")
                except ModuleNotFoundError as err:
                    if err.name != f"{module.__name__}.{item}":
                        raise

    def _import(
        self,
        name: str,
        globals: Mapping[str, Any] | None = None,
        locals: Mapping[str, Any] | None = None,
        fromlist: Any = (),
        level: int = 0,
    ) -> Any:
        """``__import__`` for the function's modules (see the module docstring)."""
        top = name.partition(".")[0]
        if level == 0 and top == "os":
            if name == "os":
                return self._os
            module = _real_import(name, globals, locals, fromlist, 0)
            return module if fromlist else self._os
        if level == 0 and self._is_local(top):
            target = f"{self.package}.{name}"
        elif level > 0 and globals is not None and self._owns(globals.get("__package__")):
            target = importlib.util.resolve_name("." * level + name, globals["__package__"])
        else:
            return _real_import(name, globals, locals, fromlist, level)
        module = self._load(target)
        if fromlist:
            self._from_list(module, fromlist)
            return module
        return self._load(f"{self.package}.{top}") if level == 0 else module

    def _owns(self, package: object) -> bool:
        return isinstance(package, str) and (package == self.package or package.startswith(self.package + "."))
