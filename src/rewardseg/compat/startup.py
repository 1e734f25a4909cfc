"""A job's start-up: mmengine's ``Visualizer`` figure and a few mmseg imports, each deferred
to its first use.

6. mmengine's ``Visualizer`` builds a matplotlib figure when it is created (the runner
   creates one for every run), which imports matplotlib (~0.3 s of a job's start-up);
   training never draws with it (``SegVisualizationHook`` does only with ``draw=True``).
   The figure (``fig_save``, ``fig_save_canvas``, ``ax_save``, ``dpi``) is now built by
   the same code the first time one of them is used.
7. A few mmseg modules import at the top what only some models use: SciPy's ``ndimage``,
   ``optimize`` and ``interpolate`` (``BioMedicalGaussianBlur``, Mask2Former's Hungarian
   assigner, BEiT's position-embedding resize, the Hausdorff loss) and CLIP's tokenizer
   (which reads its vocabulary at import): ~0.4 s of every job's start-up. In those
   modules alone (:data:`DEFERRED_IMPORTS`), while they are imported, ``from ... import
   name`` of these binds a stand-in that imports the module at its first use (a call,
   an attribute) and hands over to the real object; a module already imported is bound
   as usual.
"""
from __future__ import annotations

import importlib
import importlib.abc
import sys

#: The attributes of an mmengine ``Visualizer`` that its figure sets.
_FIGURE_ATTRIBUTES = ("fig_save_canvas", "fig_save", "ax_save", "dpi")


class _PendingFigure:
    """What ``Visualizer.__init__`` gets instead of the figure it would build (its
    ``dpi`` included); removed again when ``__init__`` returns."""

    def get_dpi(self):
        return self


_PENDING_FIGURE = _PendingFigure()


class _LazyFigureAttribute:
    """Class attribute standing for one of :data:`_FIGURE_ATTRIBUTES` while the instance
    has none: builds the figure (mmengine's ``_initialize_fig``, ``fig_save_cfg``) and
    sets all four on the instance, which from then on has its own."""

    def __init__(self, name: str, initialize_fig):
        self.name, self.initialize_fig = name, initialize_fig

    def __get__(self, obj, owner=None):
        if obj is None:
            return self
        canvas, fig, ax = self.initialize_fig(obj, obj.fig_save_cfg)
        obj.fig_save_canvas, obj.fig_save, obj.ax_save = canvas, fig, ax
        obj.dpi = fig.get_dpi()
        return obj.__dict__[self.name]


def _defer_visualizer_figure() -> None:
    import functools
    import inspect

    from mmengine.visualization import Visualizer

    if getattr(Visualizer, "rewardseg_lazy_figure", False):
        return
    init, initialize_fig = Visualizer.__init__, Visualizer._initialize_fig
    signature = inspect.signature(init)

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        try:
            image = signature.bind(self, *args, **kwargs).arguments.get("image")
        except TypeError:
            image = None  # the original raises it
        if image is not None:  # set_image draws at the end of __init__: build it now
            return init(self, *args, **kwargs)
        self.__dict__["_initialize_fig"] = lambda fig_cfg: (_PENDING_FIGURE,) * 3
        try:
            init(self, *args, **kwargs)
        finally:
            self.__dict__.pop("_initialize_fig", None)
            for name in _FIGURE_ATTRIBUTES:
                if self.__dict__.get(name) is _PENDING_FIGURE:
                    del self.__dict__[name]

    for name in _FIGURE_ATTRIBUTES:
        setattr(Visualizer, name, _LazyFigureAttribute(name, initialize_fig))
    Visualizer.__init__ = __init__
    Visualizer.rewardseg_lazy_figure = True


#: mmseg modules (importing -> imported) whose top-level ``from ... import`` of what only
#: some models use is deferred to its first use (docstring, item 7).
DEFERRED_IMPORTS = {
    "mmseg.datasets.transforms.transforms": ("scipy.ndimage",),  # BioMedicalGaussianBlur
    "mmseg.models.assigners.hungarian_assigner": ("scipy.optimize",),  # Mask2Former
    "mmseg.models.backbones.beit": ("scipy.interpolate",),  # `from scipy import interpolate`
    "mmseg.models.losses.huasdorff_distance_loss": ("scipy.ndimage",),
    "mmseg.utils": ("mmseg.utils.tokenizer",),  # CLIP's tokenizer, built at its import
    "mmseg.models.text_encoder.clip_text_encoder": ("mmseg.utils.tokenizer",),
}


class _Deferred:
    """Stands for ``name`` of module ``module`` (``from module import name``) until its
    first use (a call, an attribute), which imports it and hands over to the real object
    (a function, a class, a submodule)."""

    def __init__(self, module: str, name: str):
        self._module, self._name = module, name

    def _resolve(self):
        module = importlib.import_module(self._module)
        try:
            return getattr(module, self._name)
        except AttributeError:  # a submodule not imported yet
            return importlib.import_module(f"{self._module}.{self._name}")

    def __call__(self, *args, **kwargs):
        return self._resolve()(*args, **kwargs)

    def __getattr__(self, attr):
        if attr.startswith("__") and attr.endswith("__"):
            raise AttributeError(attr)
        return getattr(self._resolve(), attr)

    def __repr__(self):
        return f"<rewardseg: {self._module}.{self._name}, imported at its first use>"


class _DeferringFrom:
    """What a deferring ``__import__`` returns to ``from module import ...``: the names
    it defers as :class:`_Deferred`, the others from the imported module."""

    def __init__(self, module: str, deferred, imported):
        self._module, self._deferred, self._imported = module, deferred, imported

    def __getattr__(self, name):
        if name in self._deferred:
            return _Deferred(self._module, name)
        if self._imported is None or (name.startswith("__") and name.endswith("__")):
            raise AttributeError(name)
        return getattr(self._imported, name)


def _absolute(name: str, globals, level: int) -> str:
    if not level:
        return name
    package = (globals or {}).get("__package__") or ""
    base = package.rsplit(".", level - 1)[0] if level > 1 else package
    return f"{base}.{name}" if name else base


def _deferring_import(deferred_modules):
    """An ``__import__`` for a module of :data:`DEFERRED_IMPORTS`: ``from X import n``
    defers ``n`` when ``X`` or ``X.n`` is one of ``deferred_modules`` and not imported
    yet; anything else imports as usual."""
    import builtins

    def __import__(name, globals=None, locals=None, fromlist=(), level=0):
        if fromlist:
            module = _absolute(name, globals, level)
            pending = [m for m in deferred_modules if m not in sys.modules]
            if module in pending:
                return _DeferringFrom(module, set(fromlist), None)
            deferred = {n for n in fromlist if f"{module}.{n}" in pending}
            if deferred:
                rest = tuple(n for n in fromlist if n not in deferred)
                imported = builtins.__import__(name, globals, locals, rest or ("__name__",),
                                               level)
                return _DeferringFrom(module, deferred, imported)
        return builtins.__import__(name, globals, locals, fromlist, level)

    return __import__


class _DeferringLoader(importlib.abc.Loader):
    """Runs a module of :data:`DEFERRED_IMPORTS` with :func:`_deferring_import` as its
    ``__import__``, then gives it the usual builtins back (what its functions import at
    run time imports as usual)."""

    def __init__(self, loader, deferred_modules):
        self.loader, self.deferred_modules = loader, deferred_modules

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        import builtins

        module.__dict__["__builtins__"] = dict(
            vars(builtins), __import__=_deferring_import(self.deferred_modules))
        try:
            self.loader.exec_module(module)
        finally:
            module.__dict__["__builtins__"] = builtins

    def __getattr__(self, name):  # get_code, get_source, is_package, ... of the file loader
        return getattr(self.loader, name)


class _DeferringFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        deferred_modules = DEFERRED_IMPORTS.get(name)
        if deferred_modules is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                if hasattr(spec.loader, "exec_module"):
                    spec.loader = _DeferringLoader(spec.loader, deferred_modules)
                return spec
        return None


_DEFERRING = _DeferringFinder()


def _defer_optional_mmseg_imports() -> None:
    if _DEFERRING not in sys.meta_path:
        sys.meta_path.insert(0, _DEFERRING)
