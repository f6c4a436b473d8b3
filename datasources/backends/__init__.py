"""Data-source backends: one module per database vendor, behind one interface.

Each module of this package listed in ``BACKEND_MODULES`` defines ``BACKEND``, a
datasources.backends.base.Backend. Adding a vendor means adding its module and its name
there (and its tests), nothing else: sources on it are configured, examined, checked and
run like the others. The backend of a source is chosen by its connection, as Django
chooses its own (``django/db/backends/<vendor>/``).
"""

import functools
from importlib import import_module

BACKEND_MODULES = ("postgresql", "sqlite", "mysql")


class UnsupportedVendor(ValueError):
    """No backend serves this database; ``str()`` names the ones that do."""


@functools.cache
def backends():
    """Every backend by vendor, in BACKEND_MODULES order."""
    found = {}
    for module_name in BACKEND_MODULES:
        backend = import_module(f"{__name__}.{module_name}").BACKEND
        found[backend.vendor] = backend
    return found


def _supported():
    return ", ".join(f"{backend.url_schemes[0]}://" for backend in backends().values())


def backend_for_vendor(vendor):
    """The backend of ``vendor`` (Django's ``connection.vendor``); UnsupportedVendor."""
    try:
        return backends()[vendor]
    except KeyError:
        raise UnsupportedVendor(
            f"Data sources on {vendor} are not supported; use one of: {_supported()}."
        ) from None


def backend_for(connection):
    """The backend of the data source behind the Django connection ``connection``."""
    return backend_for_vendor(connection.vendor)


def backend_for_scheme(scheme):
    """The backend whose URLs start with ``scheme``:// (``mariadb``), or None."""
    for backend in backends().values():
        if scheme in backend.url_schemes:
            return backend
    return None


def backend_for_engine(engine):
    """The backend whose Django ENGINE is ``engine``; UnsupportedVendor."""
    for backend in backends().values():
        if backend.engine == engine:
            return backend
    raise UnsupportedVendor(
        f"Data sources on {engine.rsplit('.', 1)[-1]} are not supported; use one of: "
        f"{_supported()}."
    )


def database_errors():
    """Django's DatabaseError and every backend driver's exception classes: what the
    database itself refused (shown to the user with its message)."""
    from django.db import DatabaseError

    errors = [DatabaseError]
    for backend in backends().values():
        errors += [error for error in backend.errors if error not in errors]
    return tuple(errors)
