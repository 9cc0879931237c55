"""Students chosen by name: configs and checkpoints store a name and options, never a class.

A student factory is registered with :func:`register_student` and built with
:func:`create_student`. Every built student carries ``config`` (its name plus every option,
defaults included), so :func:`student_from_config` rebuilds the same network later even if a
default changes in between.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, TypeVar

from torch import nn

from dinomix_core.io.errors import DinomixInputError

F = TypeVar("F", bound=Callable[..., nn.Module])

_STUDENTS: dict[str, Callable[..., nn.Module]] = {}


def register_student(name: str) -> Callable[[F], F]:
    """Decorator: make ``factory(**cfg) -> nn.Module`` available as student ``name``."""

    def decorate(factory: F) -> F:
        if name in _STUDENTS and _STUDENTS[name] is not factory:
            raise ValueError(f"student name {name!r} is already registered by {_STUDENTS[name]!r}")
        _STUDENTS[name] = factory
        return factory

    return decorate


def register_builtin_students() -> None:
    """Register the students shipped here (their modules register themselves when imported).

    Called before every lookup: the models package no longer imports them up front (see
    ``dinomix_core/models/__init__.py``), and a caller may import this module directly.
    """
    from dinomix_core.models import unet2d, unet3d  # noqa: F401  (they register unet2d, unet2.5d; unet3d, vnet)


def list_students() -> list[str]:
    """Names accepted by :func:`create_student`, sorted."""
    register_builtin_students()
    return sorted(_STUDENTS)


def student_options(name: str) -> dict[str, Any]:
    """The options of student ``name`` with their defaults (``inspect.Parameter.empty``: required)."""
    factory = _factory(name)
    return {
        p.name: p.default
        for p in inspect.signature(factory).parameters.values()
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    }


def create_student(name: str, **cfg: Any) -> nn.Module:
    """Build student ``name`` with options ``cfg``; unknown names or options are input errors."""
    options = student_options(name)
    unknown = sorted(set(cfg) - set(options))
    if unknown:
        raise DinomixInputError(
            None,
            f"student {name!r} has no option(s) {', '.join(map(repr, unknown))}.",
            f"use only: {', '.join(sorted(options))}.",
        )
    missing = sorted(k for k, default in options.items() if default is inspect.Parameter.empty and k not in cfg)
    if missing:
        raise DinomixInputError(
            None,
            f"student {name!r} needs option(s) {', '.join(missing)}.",
            f"give {', '.join(missing)} (num_classes counts background plus every organ).",
        )
    return _STUDENTS[name](**cfg)


def student_from_config(config: dict[str, Any]) -> nn.Module:
    """Rebuild a student from its ``config`` (a dict with ``"name"`` and the options)."""
    if not isinstance(config, dict) or "name" not in config:
        raise DinomixInputError(
            None,
            f"a student config must be a dict with a 'name' key, got {config!r}.",
            f"give one of the names {', '.join(list_students())}.",
        )
    options = dict(config)
    name = options.pop("name")
    return create_student(name, **options)


def _factory(name: str) -> Callable[..., nn.Module]:
    register_builtin_students()
    if name not in _STUDENTS:
        raise DinomixInputError(
            None,
            f"unknown student network {name!r}.",
            f"choose one of: {', '.join(list_students())}.",
        )
    return _STUDENTS[name]
