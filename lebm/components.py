"""Components chosen by class path: networks built by the model, sampler objects, and their
plain-data form for checkpoints.

A model receives each of its networks as a *factory*: a class (or anything callable) that the
model calls with the sizes known only at run time, plus the arguments the config gave. The
factory's leading positional parameters are those sizes, in a fixed order per role:

============================  ==============================================  ===============
role                          call made by the model                          maps
============================  ==============================================  ===============
latent energy ``f(z)``        ``energy(latent_dim)``                          (B, d) -> (B,)
generator ``g(z)``            ``generator(latent_dim, data_shape)``           (B, d) -> (B, *data_shape)
conditional net ``n(x, c)``   ``net(data_shape)``                             (B, *data_shape), (B,) -> (B, *data_shape)
encoder ``e(x)`` (VAE)        ``encoder(data_shape, out_features)``           (B, *data_shape) -> (B, out_features)
============================  ==============================================  ===============

LightningCLI (jsonargparse) turns a config entry ``{class_path: ..., init_args: {...}}`` into
such a factory: the ``init_args`` are every argument *after* the leading sizes, so a size is
never typed twice. In Python, pass the class itself or ``functools.partial(Class, **kwargs)``.

Checkpoints store hyperparameters as plain data (``torch.load(weights_only=True)`` refuses
classes and functions), so :func:`to_config` turns a factory or sampler object into its
``{"class_path", "init_args"}`` form and :func:`as_factory` / :func:`as_instance` turn that form
back: ``Model.load_from_checkpoint(path)`` then works for a model built in Python or by the CLI.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

EnergyFactory = Callable[[int], nn.Module]
"""``energy(latent_dim) -> f``, with ``f(z)``: (B, latent_dim) -> (B,)."""

GeneratorFactory = Callable[[int, tuple[int, ...]], nn.Module]
"""``generator(latent_dim, data_shape) -> g``, with ``g(z)``: (B, latent_dim) -> (B, *data_shape)."""

EncoderFactory = Callable[[tuple[int, ...], int], nn.Module]
"""``encoder(data_shape, out_features) -> e``, with ``e(x)``: (B, *data_shape) -> (B, out_features)."""

ConditionalNetFactory = Callable[[tuple[int, ...]], nn.Module]
"""``net(data_shape) -> n``, with ``n(x, c)``: (B, *data_shape), (B,) -> (B, *data_shape)."""


def class_path(cls: type) -> str:
    """``module.QualName`` of a class, importable by :func:`import_class`."""
    return f"{cls.__module__}.{cls.__qualname__}"


def import_class(path: str) -> type:
    """The class at ``"package.module.Name"``.

    Raises:
        ImportError: naming the path and what part of it could not be found.
    """
    module_name, _, name = path.rpartition(".")
    if not module_name:
        raise ImportError(
            f"class_path {path!r} must be a dotted import path, e.g. 'lebm.nets.UNet'"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ImportError(
            f"class_path {path!r}: cannot import module {module_name!r} ({err})"
        ) from err
    try:
        return getattr(module, name)
    except AttributeError:
        raise ImportError(f"class_path {path!r}: module {module_name!r} has no {name!r}") from None


def _is_spec(value: Any) -> bool:
    return isinstance(value, Mapping) and "class_path" in value


def _spec(value: Mapping) -> tuple[type, dict]:
    init_args = dict(value.get("init_args") or {}) | dict(value.get("dict_kwargs") or {})
    return import_class(value["class_path"]), init_args


def as_factory(value: Any, name: str = "network") -> Callable[..., Any]:
    """A callable building the component: ``value`` itself, or ``partial(cls, **init_args)`` for
    a ``{"class_path", "init_args"}`` mapping.

    Raises:
        TypeError: ``value`` is neither (the message names the argument ``name``).
    """
    if _is_spec(value):
        cls, init_args = _spec(value)
        return functools.partial(cls, **init_args)
    if not callable(value):
        raise TypeError(
            f"{name} must be a network class, a functools.partial of one, or a mapping with "
            f"class_path and init_args (e.g. {{'class_path': 'lebm.nets.GeneratorMLP', "
            f"'init_args': {{'hidden': 64}}}}); got {value!r}"
        )
    return value


def _unlazy(value: Any) -> Any:
    """A jsonargparse ``lazy_instance`` (a signature default) as its class-path mapping."""
    if hasattr(value, "lazy_get_init_data"):
        return value.lazy_get_init_data().as_dict()
    return value


def as_instance(value: Any, base: type, name: str = "component") -> Any:
    """An instance of ``base``: ``value`` itself, or a fresh one built from a
    ``{"class_path", "init_args"}`` mapping or a jsonargparse ``lazy_instance``.

    Raises:
        TypeError: ``value`` is none of these (the message names the argument ``name``).
    """
    value = _unlazy(value)
    if _is_spec(value):
        cls, init_args = _spec(value)
        value = cls(**init_args)
    if not isinstance(value, base):
        raise TypeError(
            f"{name} must be an instance of {class_path(base)} (or a mapping with class_path and "
            f"init_args naming a subclass), got {value!r}"
        )
    return value


def init_args_of(obj: Any) -> dict[str, Any]:
    """The ``__init__`` arguments of ``obj``, read from attributes of the same names."""
    cls = type(obj)
    args = {}
    for name, param in inspect.signature(cls.__init__).parameters.items():
        if name == "self" or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if not hasattr(obj, name):
            raise TypeError(
                f"{cls.__name__} keeps no attribute {name!r} for its __init__ argument of that "
                f"name, so it cannot be stored as a config; store every argument as an attribute"
            )
        args[name] = getattr(obj, name)
    return args


def _with_defaults(cls: type, given: Mapping[str, Any]) -> dict[str, Any]:
    """``given`` plus every defaulted ``__init__`` argument of ``cls`` left out of it.

    Complete arguments make a stored config mean the same on reload: jsonargparse carries
    same-named arguments over from a signature's default class to another class, so an
    argument left out could come back with the default class's value. The sizes a model
    supplies at run time are the arguments *without* defaults and stay out.
    """
    args = {}
    for name, param in inspect.signature(cls.__init__).parameters.items():
        if name == "self" or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if name in given:
            args[name] = given[name]
        elif param.default is not param.empty:
            args[name] = param.default
    unknown = set(given) - set(args)
    if unknown:
        raise TypeError(f"{cls.__name__} has no arguments {sorted(unknown)}")
    return args


def to_config(value: Any) -> Any:
    """Plain-data form of a component, for hyperparameters; other values pass through.

    - a class -> ``{"class_path": ..., "init_args": {}}``;
    - ``functools.partial(cls, **kwargs)`` (also jsonargparse's) -> its class and keywords;
    - a :class:`lebm.samplers.Sampler` (any object with a ``config()`` method) -> ``config()``;
    - a jsonargparse ``lazy_instance`` -> its class path and arguments.
    """
    value = _unlazy(value)
    if isinstance(value, type):
        return {"class_path": class_path(value), "init_args": _with_defaults(value, {})}
    if isinstance(value, functools.partial):
        classes = [a for a in (value.func, *value.args) if isinstance(a, type)]
        if len(classes) != 1 or (value.args and value.func is classes[0]):
            raise TypeError(
                f"cannot store {value!r} as a config: give the network as a class, or as "
                "functools.partial(Class, **keyword_arguments) without positional arguments"
            )
        cls = classes[0]
        return {"class_path": class_path(cls), "init_args": _with_defaults(cls, value.keywords)}
    if hasattr(value, "config") and callable(value.config) and not isinstance(value, nn.Module):
        return value.config()
    return value
