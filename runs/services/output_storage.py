"""Where run outputs live: put a finished file into storage, remove it, say where it is.

Two kinds of storage, both through Django's ``default_storage``:

- the filesystem (``OUTPUTS_DIR``): the export is written to a temp file next to its
  destination and renamed into place, an atomic step;
- an S3-compatible bucket (``OUTPUTS_S3_BUCKET``, django-storages): the export is
  written to a local temp file and uploaded only once it is complete (in parts, above
  ``UPLOAD_PART_BYTES``), so the object appears only when the run has its whole result.
  boto3 aborts a multipart upload that fails; one whose process died stays behind as
  an unfinished upload until recovery (:func:`remove_unfinished_output`) or
  housekeeping (:func:`remove_stray_objects`) aborts it.

Requests someone waits on (the check before a download's redirect, the admin's
preview) wait on the storage briefly and only a few at a time
(:func:`output_exists_now`, :func:`output_for_people`); storage failures are put in
words (:func:`storage_error_words`).

The runner, recovery, housekeeping, downloads, previews and mails all go through here.
"""

import contextlib
import functools
import io
import logging
import os
import posixpath
import shutil
import sys
import tempfile
import threading
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.core.exceptions import SuspiciousFileOperation
from django.core.files import File
from django.core.files.storage import default_storage
from django.utils import timezone
from django.utils.http import content_disposition_header

from runs.models import output_upload_path
from runs.services.exporter import ExportFailed

logger = logging.getLogger(__name__)

FILESYSTEM = "filesystem"
S3 = "s3"

# Parts of 16 MiB, four at a time: a 257 MiB output is 17 parts (bench/export.py --s3).
UPLOAD_PART_BYTES = 16 << 20
UPLOAD_CONCURRENCY = 4
# Keys per listing page and per batch delete (S3 allows 1,000).
KEYS_PER_BATCH = 1000
# What a client told to come back later waits first (Retry-After).
RETRY_AFTER_SECONDS = 5


def on_object_storage():
    """Are outputs in an S3-compatible bucket (else on the filesystem)?

    Without importing boto3 on the filesystem: an S3 storage, once set up, has imported
    its module.
    """
    storage_class = default_storage.__class__  # sets the storage up
    s3_module = sys.modules.get("storages.backends.s3")
    return s3_module is not None and issubclass(storage_class, s3_module.S3Storage)


def storage_kind():
    return S3 if on_object_storage() else FILESYSTEM


def partial_file_prefix(run):
    return f".partial-run{run.pk}-"


def output_file_stem(run):
    """The output's file name without its extension: unique per run (it holds the id)."""
    return f"{run.report.slug}_{run.started_at:%Y%m%dT%H%M%SZ}_run{run.pk}"


def object_key(name):
    """The bucket key of the stored output ``name`` (the prefix, then the name).

    SuspiciousFileOperation for a name that would leave the prefix: names come from
    the runs table, but a key must never reach another part of the bucket.
    """
    normalized = posixpath.normpath(name)
    if normalized.startswith(("/", "../")) or normalized in (".", ".."):
        raise SuspiciousFileOperation(f"The output name {name!r} leaves the outputs prefix.")
    location = default_storage.location
    return posixpath.join(location, normalized) if location else normalized


def _client():
    """boto3's S3 client of the storage (one per thread, as django-storages keeps them),
    with the configured timeouts and attempts (``OUTPUTS_S3_*_TIMEOUT_SECONDS``,
    ``OUTPUTS_S3_MAX_ATTEMPTS``)."""
    return default_storage.connection.meta.client


def _short_client():
    """A client for requests that must not wait long: one attempt, at most
    ``OUTPUTS_S3_WEB_TIMEOUT_SECONDS`` to connect and per read. One per process (boto3
    clients are thread-safe), with a connection for each slot of the bulkhead."""
    storage = default_storage
    return _client_for_endpoint(
        storage.endpoint_url,
        storage.access_key,
        storage.secret_key,
        storage.security_token,
        storage.region_name,
        _short_config(
            storage.client_config,
            settings.OUTPUTS_S3_WEB_TIMEOUT_SECONDS,
            settings.OUTPUTS_S3_WEB_CONCURRENCY,
        ),
    )


@functools.lru_cache(maxsize=4)
def _short_config(config, timeout, connections):
    from reportsvc.s3_storage import bounded_waits

    return config.merge(
        bounded_waits(timeout, timeout, 1, max_pool_connections=max(connections, 10))
    )


def _bucket():
    return default_storage.bucket_name


# --- Writing ---------------------------------------------------------------------------


def available_name(name):
    """The name to store a new output under (on S3 the name itself: run keys are unique)."""
    return default_storage.get_available_name(name)


def new_temp_file(name, *, prefix, suffix):
    """``(fd, path)`` of a new temp file to export the output ``name`` into: next to its
    destination on the filesystem (so the move into place is a rename), else in the
    machine's temp folder."""
    folder = _temp_folder(name)
    folder.mkdir(parents=True, exist_ok=True)
    return tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=folder)


def _temp_folder(name):
    """Next to the destination on the filesystem; for remote storage a folder of this
    service's own on this machine (``REPORTSVC_VAR_DIR``), where only its runs write."""
    if not on_object_storage():
        try:
            return Path(default_storage.path(name)).parent
        except NotImplementedError:  # another remote storage
            pass
    return Path(settings.VAR_DIR) / "partial-outputs"


def store_finished_file(temp_path, name, *, content_type):
    """Put the complete export at ``temp_path`` into storage as ``name``; return the
    stored name. The caller removes ``temp_path`` if it is still there."""
    if on_object_storage():
        _upload(temp_path, object_key(name), content_type)
        return name
    try:
        destination = default_storage.path(name)
    except NotImplementedError:
        with open(temp_path, "rb") as file:
            return default_storage.save(name, File(file))
    os.replace(temp_path, destination)
    return name


def _upload(path, key, content_type):
    from boto3.s3.transfer import TransferConfig
    from botocore.exceptions import BotoCoreError, ClientError

    config = TransferConfig(
        multipart_threshold=UPLOAD_PART_BYTES,
        multipart_chunksize=UPLOAD_PART_BYTES,
        max_concurrency=UPLOAD_CONCURRENCY,
    )
    try:
        _client().upload_file(
            path, _bucket(), key, ExtraArgs={"ContentType": content_type}, Config=config
        )
    except (BotoCoreError, ClientError) as error:
        raise ExportFailed(
            f"The output could not be stored in the bucket {_bucket()} as {key}: {error}"
        ) from error


# --- Failures in words -----------------------------------------------------------------


def storage_error_words(error):
    """What went wrong with a request to the storage, in words: refused (and its code),
    not reachable, too slow, or what it answered."""
    from botocore.exceptions import (
        ClientError,
        ConnectionError,
        ConnectTimeoutError,
        HTTPClientError,
        ReadTimeoutError,
    )

    cause = _answer_of(error) or error
    if isinstance(cause, ClientError):
        answer = cause.response.get("Error", {})
        status = cause.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code, message = answer.get("Code", ""), answer.get("Message", "")
        detail = f"{code}: {message}" if message and message != code else code or str(status)
        if status == 403 or code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return f"the storage refused access ({detail})"
        return f"the storage answered {status} ({detail})"
    if isinstance(cause, ConnectTimeoutError):
        return f"the storage could not be reached in time ({cause})"
    if isinstance(cause, ConnectionError):
        return f"the storage could not be reached ({cause})"
    if isinstance(cause, ReadTimeoutError):
        return f"the storage did not answer in time ({cause})"
    if isinstance(cause, HTTPClientError):
        return f"the connection to the storage broke ({cause})"
    return f"the storage could not be used ({cause})"


def _answer_of(error):
    """The storage's answer (a ClientError) behind ``error``: itself, or the one boto3's
    S3UploadFailedError was raised from; None when the storage did not answer."""
    from botocore.exceptions import ClientError

    for candidate in (error, error.__cause__, error.__context__):
        if isinstance(candidate, ClientError):
            return candidate
    return None


# --- Requests someone waits on ---------------------------------------------------------


class StorageUnavailable(Exception):
    """The storage cannot answer now (unreachable, refusing, slow, or this process's
    requests to it all busy); ``str()`` says which, in words. Try again later."""


class _Bulkhead:
    """At most ``OUTPUTS_S3_WEB_CONCURRENCY`` threads of this process wait on the
    storage for people at once; a slot is taken without waiting, or not at all."""

    def __init__(self):
        self._lock = threading.Lock()
        self._size, self._slots = None, None

    def try_enter(self):
        """A held slot (release it), or None when all are taken."""
        size = settings.OUTPUTS_S3_WEB_CONCURRENCY
        with self._lock:
            if size != self._size:
                self._size, self._slots = size, threading.BoundedSemaphore(size)
            slots = self._slots
        return slots if slots.acquire(blocking=False) else None


_bulkhead = _Bulkhead()


@contextlib.contextmanager
def _storage_errors_as_unavailable():
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (BotoCoreError, ClientError) as error:
        raise StorageUnavailable(storage_error_words(error)) from error


@contextlib.contextmanager
def _waited_on():
    """The short client, in a slot of the bulkhead, with its failures as
    :class:`StorageUnavailable`."""
    slot = _bulkhead.try_enter()
    if slot is None:
        raise StorageUnavailable(
            f"all {settings.OUTPUTS_S3_WEB_CONCURRENCY} of this web process's requests to the "
            "storage are waiting on it already (it answers slowly or not at all)"
        )
    try:
        with _storage_errors_as_unavailable():
            yield _short_client()
    finally:
        slot.release()


def output_exists_now(name):
    """Whether the stored output ``name`` exists, for someone waiting (a download): on
    S3 one HEAD request in a slot of the bulkhead, waiting at most
    ``OUTPUTS_S3_WEB_TIMEOUT_SECONDS`` to connect and to read. :class:`StorageUnavailable`
    when the storage cannot say."""
    if not on_object_storage():
        return default_storage.exists(name)
    from botocore.exceptions import ClientError

    key = object_key(name)
    with _waited_on() as client:
        try:
            client.head_object(Bucket=_bucket(), Key=key)
        except ClientError as error:
            if error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                return False
            raise
    return True


@contextlib.contextmanager
def output_for_people(name, *, head_bytes=None, seekable=False):
    """The stored output, open for reading, for someone waiting (the admin's preview):
    on S3 fetched in a slot of the bulkhead with the short client, the slot held until
    the block ends. ``head_bytes``: only that many bytes from the start (a range
    request); ``seekable``: a file that seeks (a zip is read from its end), on S3 a
    local temp copy. FileNotFoundError when it is missing, :class:`StorageUnavailable`
    when the storage cannot answer."""
    if not on_object_storage():
        with default_storage.open(name, "rb") as file:
            yield file
        return
    with _waited_on() as client:
        body = _get_object(client, name, head_bytes)
        if not seekable:
            yield body
            return
        with tempfile.SpooledTemporaryFile(max_size=8 << 20) as copy:
            shutil.copyfileobj(body, copy, 1 << 20)
            copy.seek(0)
            yield copy


# --- Removing --------------------------------------------------------------------------


def remove_output(name):
    """Delete a stored output. A failure is logged, not raised: the caller has already
    recorded what matters, and on S3 housekeeping deletes objects no run records."""
    try:
        default_storage.delete(name)
    except Exception:
        logger.exception("could not delete the output %s", name)


def remove_unfinished_output(run):
    """Delete what a run that did not finish left behind; return what was removed.

    Its temp files (for remote storage, those on this machine: a worker starting on
    another one removes its own, see :func:`remove_local_partial_files`), and on S3
    its unfinished uploads and an object uploaded but never recorded on the run.
    """
    removed = []
    for path in _temp_folder(output_upload_path(run, "x")).glob(f"{partial_file_prefix(run)}*"):
        path.unlink(missing_ok=True)
        removed.append(str(path))
    if on_object_storage() and run.started_at:
        removed += _remove_objects_of_unfinished_run(run)
    return removed


def remove_local_partial_files():
    """At worker start: delete temp files in this machine's folder for remote storage
    whose run is not running any more (a worker here died, and its run was failed by a
    worker elsewhere). Returns their paths."""
    from runs.models import Run, RunStatus

    folder = Path(settings.VAR_DIR) / "partial-outputs"
    files = {}
    for path in folder.glob(".partial-run*-*"):
        run_id = path.name.removeprefix(".partial-run").partition("-")[0]
        if run_id.isdigit():
            files[path] = int(run_id)
    running = set(
        Run.objects.filter(pk__in=set(files.values()), status=RunStatus.RUNNING).values_list(
            "pk", flat=True
        )
    )
    removed = [path for path, run_id in files.items() if run_id not in running]
    for path in removed:
        path.unlink(missing_ok=True)
    return removed


def _remove_objects_of_unfinished_run(run):
    client, bucket = _client(), _bucket()
    # The run's key with any extension: "<prefix>/<slug>/<stem>."
    key_prefix = object_key(output_upload_path(run, output_file_stem(run))) + "."
    recorded = object_key(run.output.name) if run.output else None
    removed = []
    for page in client.get_paginator("list_multipart_uploads").paginate(
        Bucket=bucket, Prefix=key_prefix
    ):
        for upload in page.get("Uploads", []):
            client.abort_multipart_upload(
                Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]
            )
            removed.append(f"unfinished upload s3://{bucket}/{upload['Key']}")
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key_prefix):
        for item in page.get("Contents", []):
            if item["Key"] != recorded:
                client.delete_object(Bucket=bucket, Key=item["Key"])
                removed.append(f"object s3://{bucket}/{item['Key']}")
    return removed


def remove_stray_objects(now=None):
    """On S3, under the prefix: abort uploads started more than
    ``OUTPUTS_S3_CLEANUP_AFTER_SECONDS`` ago (their process died) and delete objects
    that old which no run records (a worker died between upload and record, or a
    deletion failed). Returns ``(uploads aborted, objects deleted)``."""
    if not on_object_storage():
        return 0, 0
    from runs.models import Run

    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.OUTPUTS_S3_CLEANUP_AFTER_SECONDS)
    client, bucket = _client(), _bucket()
    location = default_storage.location
    prefix = f"{location}/" if location else ""
    aborted = deleted = 0
    for page in client.get_paginator("list_multipart_uploads").paginate(
        Bucket=bucket, Prefix=prefix
    ):
        for upload in page.get("Uploads", []):
            if upload["Initiated"] < cutoff:
                client.abort_multipart_upload(
                    Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                )
                aborted += 1
    for page in client.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": KEYS_PER_BATCH}
    ):
        old = {
            item["Key"][len(prefix) :]: item["Key"]
            for item in page.get("Contents", [])
            if item["LastModified"] < cutoff
        }
        recorded = set(Run.objects.filter(output__in=list(old)).values_list("output", flat=True))
        stray = [key for name, key in old.items() if name not in recorded]
        if stray:
            client.delete_objects(
                Bucket=bucket, Delete={"Objects": [{"Key": key} for key in stray], "Quiet": True}
            )
            deleted += len(stray)
            logger.info("deleted %s objects no run records: %s", len(stray), stray[:10])
    return aborted, deleted


# --- Setting up ------------------------------------------------------------------------


class OutputBucketError(Exception):
    """The output bucket cannot be made ready; ``str()`` says why."""


def create_output_bucket():
    """Create the configured bucket unless it exists: ``(created, bucket name)``."""
    if not on_object_storage():
        raise OutputBucketError(
            "Outputs are on the filesystem: set OUTPUTS_S3_BUCKET (and AWS_S3_ENDPOINT_URL, "
            "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) to keep them in a bucket."
        )
    from botocore.exceptions import BotoCoreError, ClientError

    client, bucket = _client(), _bucket()
    try:
        client.head_bucket(Bucket=bucket)
        return False, bucket
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket"):
            raise OutputBucketError(f"Cannot use the bucket {bucket}: {error}") from None
    except BotoCoreError as error:
        raise OutputBucketError(f"Cannot reach the storage: {error}") from None
    region = default_storage.region_name
    location = {"CreateBucketConfiguration": {"LocationConstraint": region}}
    try:
        client.create_bucket(
            Bucket=bucket, **(location if region not in (None, "us-east-1") else {})
        )
    except (BotoCoreError, ClientError) as error:
        raise OutputBucketError(f"Cannot create the bucket {bucket}: {error}") from None
    return True, bucket


# --- Reading ---------------------------------------------------------------------------


def output_location(name):
    """Where the stored output ``name`` is, for people and scripts."""
    if not name:
        return {"storage": storage_kind(), "output_path": None, "bucket": None, "key": None}
    if on_object_storage():
        return {"storage": S3, "output_path": None, "bucket": _bucket(), "key": object_key(name)}
    try:
        path = default_storage.path(name)
    except NotImplementedError:
        path = None
    return {"storage": FILESYSTEM, "output_path": path, "bucket": None, "key": None}


def open_output(name, *, head_bytes=None):
    """The stored output, open for reading as a stream; with ``head_bytes`` only that
    many bytes from its start are fetched (a range request on S3), so a preview of a
    huge object transfers only its head. FileNotFoundError when it is missing."""
    if not on_object_storage():
        return default_storage.open(name, "rb")
    return _get_object(_client(), name, head_bytes)


def _get_object(client, name, head_bytes):
    from botocore.exceptions import ClientError

    request = {"Bucket": _bucket(), "Key": object_key(name)}
    if head_bytes is not None:
        request["Range"] = f"bytes=0-{max(head_bytes, 1) - 1}"
    try:
        return client.get_object(**request)["Body"]
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code")
        if code in ("NoSuchKey", "404"):
            raise FileNotFoundError(f"No object s3://{_bucket()}/{object_key(name)}") from None
        if code == "InvalidRange":  # an empty object has no first byte
            return io.BytesIO(b"")
        raise


def download_url(name, *, file_name, content_type):
    """A presigned GET URL of the output's object, valid for the storage's
    ``querystring_expire`` (``OUTPUTS_S3_URL_EXPIRE_SECONDS``), with which the storage
    answers with ``content_type`` and as an attachment named ``file_name``."""
    return _presigning_client().generate_presigned_url(
        "get_object",
        Params={
            "Bucket": _bucket(),
            "Key": object_key(name),
            "ResponseContentDisposition": content_disposition_header(True, file_name),
            "ResponseContentType": content_type,
        },
        ExpiresIn=default_storage.querystring_expire,
    )


def _presigning_client():
    """The storage's client, or one for ``OUTPUTS_S3_PUBLIC_ENDPOINT_URL`` when clients
    reach the storage at another address: a URL is signed for the host it names."""
    storage = default_storage
    public = settings.OUTPUTS_S3_PUBLIC_ENDPOINT_URL
    if not public or public == storage.endpoint_url:
        return _client()
    return _client_for_endpoint(
        public,
        storage.access_key,
        storage.secret_key,
        storage.security_token,
        storage.region_name,
        storage.client_config,
    )


@functools.lru_cache(maxsize=4)
def _client_for_endpoint(endpoint_url, access_key, secret_key, token, region, config):
    from reportsvc.s3_storage import new_session

    session = new_session(
        aws_access_key_id=access_key, aws_secret_access_key=secret_key, aws_session_token=token
    )
    return session.client("s3", endpoint_url=endpoint_url, region_name=region, config=config)
