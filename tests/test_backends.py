"""The backend registry: one module per vendor, chosen by the connection."""

import pytest
from django.db import connections

from datasources.backends import (
    BACKEND_MODULES,
    UnsupportedVendor,
    backend_for,
    backend_for_engine,
    backend_for_vendor,
    backends,
)
from datasources.backends.base import Backend
from datasources.registry import DEFAULT_SOURCE, alias_for_source


def test_each_backend_module_defines_one_backend_of_its_vendor():
    assert list(backends()) == list(BACKEND_MODULES)
    for vendor, backend in backends().items():
        assert isinstance(backend, Backend)
        assert backend.vendor == vendor
        assert backend.label and backend.engine and backend.url_schemes


def test_a_source_connection_chooses_its_backend():
    connection = connections[alias_for_source(DEFAULT_SOURCE)]
    assert backend_for(connection).vendor == connection.vendor
    assert backend_for_engine(connection.settings_dict["ENGINE"]) is backend_for(connection)


def test_an_unsupported_vendor_is_refused_with_the_supported_ones_named():
    with pytest.raises(UnsupportedVendor) as refused:
        backend_for_vendor("oracle")
    assert str(refused.value) == (
        "Data sources on oracle are not supported; use one of: postgres://, sqlite://."
    )
    with pytest.raises(UnsupportedVendor, match="Data sources on oracle are not supported"):
        backend_for_engine("django.db.backends.oracle")
