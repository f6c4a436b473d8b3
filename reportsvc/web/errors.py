"""How the API answers what the services refuse: one mapping, for every view.

The services raise plain exceptions (a parameter value that does not fit, a full
queue, a run that ended before it could be cancelled); views let them propagate and
DRF calls ``api_exception_handler`` (``REST_FRAMEWORK["EXCEPTION_HANDLER"]``), which
turns them into the API's errors.
"""

from rest_framework import status
from rest_framework.exceptions import APIException, ValidationError
from rest_framework.views import exception_handler

from datasources.parameters import ParameterError
from runs.services.domain.backfill import BackfillRangeError
from runs.services.domain.queue import QueueFull
from runs.services.domain.transitions import RunNotCancellable


class ReportQueueFull(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "queue_full"


class RunAlreadyEnded(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "run_ended"


def parameter_error(error):
    """A 400 naming the parameter (``parameters.<name>``) or field that is wrong."""
    name = error.field
    if not isinstance(error, BackfillRangeError) and name != "parameters":
        name = f"parameters.{name}"
    return ValidationError({name: [error.message]})


def api_error(error):
    """The API's error for a service's exception; others are returned as they are."""
    if isinstance(error, ParameterError):
        return parameter_error(error)
    if isinstance(error, QueueFull):
        return ReportQueueFull(str(error))
    if isinstance(error, RunNotCancellable):
        return RunAlreadyEnded(str(error))
    return error


def api_exception_handler(error, context):
    return exception_handler(api_error(error), context)
