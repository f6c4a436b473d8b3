"""Parameter types: what a report's ``{{ name }}`` placeholders take as values.

Each type is a module of this package defining ``TYPE``, a
:class:`~datasources.parameters.base.ParameterType` instance; ``PARAMETER_TYPE_MODULES``
lists them, in the order people see them. Adding a type means adding its module and its
name there (and, if its ``sql_type`` is new, a cast in each backend's table), nothing
else: declarations accept it, runs parse and record its values, the admin offers a field
for it, backends render it as a literal.
"""

import functools
from importlib import import_module

from datasources.parameters.base import ParameterError, ParameterType

PARAMETER_TYPE_MODULES = ("date", "timestamp", "integer", "decimal", "text", "boolean", "choice")
TYPES = PARAMETER_TYPE_MODULES  # the type names, as declarations write them

__all__ = [
    "PARAMETER_TYPE_MODULES",
    "TYPES",
    "ParameterError",
    "ParameterType",
    "parameter_type",
    "parameter_types",
]


@functools.cache
def parameter_types():
    """Every parameter type by name, in PARAMETER_TYPE_MODULES order."""
    types = {}
    for module_name in PARAMETER_TYPE_MODULES:
        kind = import_module(f"{__name__}.{module_name}").TYPE
        types[kind.name] = kind
    return types


def parameter_type(name):
    """The parameter type called ``name``; KeyError for unknown names."""
    return parameter_types()[name]
