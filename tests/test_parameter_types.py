"""Parameter types: one class per type in a registry, as declarations name them."""

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from django import forms

from datasources.parameters import PARAMETER_TYPE_MODULES, TYPES, parameter_type, parameter_types
from datasources.parameters.base import ParameterType
from reports.parameters import Parameter

INTERVAL = (datetime(2026, 11, 24, tzinfo=UTC), datetime(2026, 11, 25, tzinfo=UTC))


def declared(kind):
    return Parameter("p", kind, "P", choices=("paid", "refunded") if kind == "choice" else ())


def test_each_type_module_defines_the_type_of_its_name():
    assert TYPES == PARAMETER_TYPE_MODULES
    assert list(parameter_types()) == list(TYPES)
    for name, kind in parameter_types().items():
        assert isinstance(kind, ParameterType)
        assert kind.name == name
        assert kind.sql_type in {"date", "timestamp", "integer", "decimal", "text", "boolean"}


def test_an_unknown_type_is_a_key_error():
    with pytest.raises(KeyError):
        parameter_type("money")


@pytest.mark.parametrize("name", TYPES)
def test_a_sample_reads_back_from_its_json_and_its_text(name):
    kind, parameter = parameter_type(name), declared(name)
    sample = kind.sample(parameter, INTERVAL)
    zone = ZoneInfo("Europe/Berlin")
    assert kind.parse(parameter, kind.json_value(sample), zone) == sample
    assert kind.parse(parameter, kind.text(sample), zone) == sample


@pytest.mark.parametrize("name", TYPES)
def test_the_admin_field_of_each_type_takes_its_text(name):
    kind, parameter = parameter_type(name), declared(name)
    sample = kind.sample(parameter, INTERVAL)
    field = kind.form_field(parameter, initial=None, label="P", required=False)
    assert isinstance(field, forms.Field)
    assert kind.parse(parameter, field.clean(kind.text(sample)), UTC) == sample


def test_only_dates_and_time_stamps_take_an_interval_bound():
    assert [name for name, kind in parameter_types().items() if kind.interval_default] == [
        "date",
        "timestamp",
    ]
    berlin = ZoneInfo("Europe/Berlin")
    bound = datetime(2026, 11, 24, 23, 30, tzinfo=UTC)
    assert parameter_type("date").from_bound(bound, berlin).isoformat() == "2026-11-25"
    assert parameter_type("timestamp").from_bound(bound, berlin) == bound
