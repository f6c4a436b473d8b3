"""Where run outputs live: put a finished file into storage, remove it, say where it is.

Two kinds of storage, both through Django's ``default_storage``:

- the filesystem (``OUTPUTS_DIR``): the export is written to a staging file in the run's
  scratch directory, on the same filesystem, and renamed into place, an atomic step;
- an S3-compatible bucket (``OUTPUTS_S3_BUCKET``, django-storages): the export is
  written to a staging file in the run's scratch directory on this machine and uploaded
  only once it is complete (in parts, above ``UPLOAD_PART_BYTES``), so the object
  appears only when the run has its whole result. boto3 aborts a multipart upload that
  fails; one whose process died stays behind as an unfinished upload until recovery
  (:func:`remove_unfinished_output`) or housekeeping (:func:`remove_stray_objects`)
  aborts it.

Every run writes on this machine only inside a scratch directory of its own
(:func:`run_scratch`), removed when the run ends, or by recovery and worker start when
its process died. Requests someone waits on (the check before a download's redirect,
the admin's preview) wait on the storage briefly and only a few at a time
(:func:`output_exists_now`, :func:`output_for_people`); storage failures are put in
words (:func:`storage_error_words`, :func:`disk_problem`).

The runner, recovery, housekeeping, downloads, previews and mails all go through here.
"""

import contextlib
import errno
import functools
import io
import logging
import os
import posixpath
import re
import shutil
import sys
import tempfile
import threading
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.core.exceptions import SuspiciousFileOperation
from django.core.files import File
from django.core.files.storage import default_storage
from django.utils import timezone
from django.utils.http import content_disposition_header

from datasources.sandbox import ExportFailed
from runs.naming import report_folder, report_outputs_prefix, run_id_of_name

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
SHORT_CONNECT_SECONDS = 1.0

# Scratch directories: under OUTPUTS_DIR in a folder no report's can be (slugs never
# start with a dot); for remote storage under REPORTSVC_VAR_DIR. Each is named for its
# run, "run<id>-<random>"; earlier versions left files named ".partial-run<id>-<random>".
SCRATCH_FOLDER = ".partial-runs"
REMOTE_SCRATCH_FOLDER = "partial-outputs"
_SCRATCH_NAME = re.compile(r"^(?:\.partial-)?run(\d+)-")


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
    ``OUTPUTS_S3_WEB_TIMEOUT_SECONDS`` in all (connecting, then reading the answer: a
    HEAD's answer comes in one read). One per process (boto3 clients are thread-safe),
    with a connection for each slot of the bulkhead."""
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

    # A second at most to connect (a storage that is up accepts in milliseconds), the
    # rest of the budget for its answer.
    connect = min(SHORT_CONNECT_SECONDS, timeout / 2)
    return config.merge(
        bounded_waits(connect, timeout - connect, 1, max_pool_connections=max(connections, 10))
    )


def _bucket():
    return default_storage.bucket_name


# --- Writing ---------------------------------------------------------------------------


def available_name(name):
    """The name to store a new output under (on S3 the name itself: run keys are unique)."""
    return default_storage.get_available_name(name)


@dataclass(frozen=True)
class Scratch:
    """A run's scratch directory and the staging file of its output in it."""

    directory: Path
    staging_path: Path

    def open_staging_file(self):
        """The staging file, new, for writing bytes unbuffered (readable by the
        service's user only, as the stored output will be)."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
        return os.fdopen(os.open(self.staging_path, flags, 0o600), "wb", buffering=0)


def scratch_root():
    """The folder of the runs' scratch directories on this machine: on the filesystem
    inside ``OUTPUTS_DIR``, on the outputs' own filesystem, so moving a finished file into
    place is an atomic rename; for remote storage ``REPORTSVC_VAR_DIR/partial-outputs``,
    where only this service's runs write."""
    if not on_object_storage():
        try:
            return Path(default_storage.path(SCRATCH_FOLDER))
        except NotImplementedError:  # another remote storage
            pass
    return Path(settings.VAR_DIR) / REMOTE_SCRATCH_FOLDER


def _scratch_setting():
    """The setting that places the scratch root, for messages."""
    if scratch_root().parent == Path(settings.VAR_DIR):
        return "REPORTSVC_VAR_DIR", Path(settings.VAR_DIR)
    return "OUTPUTS_DIR", Path(settings.MEDIA_ROOT)


@contextlib.contextmanager
def run_scratch(run, *, suffix):
    """A directory of the run's own for everything its export writes on this machine:
    the output's staging file (``output<suffix>``) and the writers' temp files
    (XlsxWriter's rows). Removed with all it holds when the block ends, however it
    ends; a process that dies leaves it to recovery and worker start
    (:func:`remove_unfinished_output`, :func:`remove_local_partial_files`).

    A disk that is full, read-only or closed to the service ends the block with
    :class:`ExportFailed` saying so (see :func:`disk_problem`).
    """
    root = scratch_root()
    with _disk_problems_in_words():
        root.mkdir(parents=True, exist_ok=True)
        directory = Path(tempfile.mkdtemp(prefix=f"run{run.pk}-", dir=root))
    try:
        with _disk_problems_in_words():
            yield Scratch(directory, directory / f"output{suffix}")
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def store_finished_file(temp_path, name, *, content_type):
    """Put the complete export at ``temp_path`` (a staging file in the run's scratch
    directory, which goes with what is left in it) into storage as ``name``; return the
    stored name. :class:`UploadFailed` when the storage does not take it."""
    if on_object_storage():
        _upload(temp_path, object_key(name), content_type)
        return name
    try:
        destination = Path(default_storage.path(name))
    except NotImplementedError:
        with open(temp_path, "rb") as file:
            return default_storage.save(name, File(file))
    destination.parent.mkdir(parents=True, exist_ok=True)
    os.replace(temp_path, destination)
    return name


class UploadFailed(ExportFailed):
    """The storage did not take the output; ``key`` is where it was going. The object
    may exist all the same: a request the client gave up on can still complete."""

    def __init__(self, message, key):
        super().__init__(message)
        self.key = key


def _upload(path, key, content_type):
    from boto3.exceptions import Boto3Error
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
    except (BotoCoreError, ClientError, Boto3Error) as error:  # S3UploadFailedError: boto3's
        raise UploadFailed(
            f"The output could not be stored in the bucket {_bucket()} as {key}: "
            f"{storage_error_words(error)}.",
            key,
        ) from error


def remove_failed_upload(error):
    """Once a run's failure is recorded: if ``error`` is an :class:`UploadFailed`, delete
    the object it was going to and abort uploads to that key, for a request the client
    gave up on that completed after all (a PUT botocore retried). Waits briefly (the
    short client); what lands later still, housekeeping removes (objects of failed runs
    go at any age)."""
    if not isinstance(error, UploadFailed) or not on_object_storage():
        return
    answer = _answer_of(error.__cause__)
    if answer and 400 <= answer.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) < 500:
        return  # refused: the storage stored nothing
    bucket = _bucket()
    try:
        with _storage_errors_as_unavailable():
            client = _short_client()
            # The delete first: sent, it takes effect even if its answer is lost.
            client.delete_object(Bucket=bucket, Key=error.key)
            uploads = client.list_multipart_uploads(Bucket=bucket, Prefix=error.key)
            for upload in uploads.get("Uploads", []):
                if upload["Key"] == error.key:
                    client.abort_multipart_upload(
                        Bucket=bucket, Key=error.key, UploadId=upload["UploadId"]
                    )
    except StorageUnavailable as problem:
        logger.warning(
            "could not remove s3://%s/%s after its upload failed (%s); housekeeping will",
            bucket,
            error.key,
            problem,
        )


# --- Failures in words -----------------------------------------------------------------

# errno -> (what is wrong with the disk, what to do about it)
_DISK_PROBLEMS = {
    errno.ENOSPC: ("is full", "Free space there or give {setting} a larger disk"),
    errno.EDQUOT: ("is over its quota", "Raise the quota or free space there"),
    errno.EROFS: ("is mounted read-only", "Mount it writable"),
    errno.EACCES: ("does not let the service write", "Let the service's user write there"),
    errno.EPERM: ("does not let the service write", "Let the service's user write there"),
}


def disk_problem(error):
    """The OSError of a full, read-only or forbidden disk behind ``error`` (the error
    itself, its cause or context, or one it wraps: XlsxWriter's FileCreateError), or
    None."""
    seen, pending = set(), [error]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _DISK_PROBLEMS:
            return current
        pending += [current.__cause__, current.__context__]
        pending += [arg for arg in getattr(current, "args", ()) if isinstance(arg, BaseException)]
    return None


def disk_problem_message(error):
    """The run's error for ``disk_problem(error)``: what happened where, and what to do."""
    setting, folder = _scratch_setting()
    what, advice = _DISK_PROBLEMS[error.errno]
    return (
        f"The output could not be written: the disk of {setting} ({folder}) {what} "
        f"({os.strerror(error.errno)}). {advice.format(setting=setting)}, then run the "
        "report again."
    )


@contextlib.contextmanager
def _disk_problems_in_words():
    try:
        yield
    except ExportFailed:
        raise
    except Exception as error:
        problem = disk_problem(error)
        if problem is None:
            raise
        raise ExportFailed(disk_problem_message(problem)) from error


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
    ``OUTPUTS_S3_WEB_TIMEOUT_SECONDS`` in all. :class:`StorageUnavailable` when the
    storage cannot say."""
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

    Its scratch directory (for remote storage, the one on this machine: a worker
    starting on another one removes its own, see :func:`remove_local_partial_files`),
    and on S3 its unfinished uploads and an object uploaded but never recorded on the
    run.
    """
    entries = _scratch_entries_of(run)
    for path in entries:
        _remove_scratch_entry(path)
    removed = [str(path) for path in entries]
    if on_object_storage() and run.started_at:
        removed += _remove_objects_of_unfinished_run(run)
    return removed


def _scratch_roots():
    """Where scratch directories (and earlier versions' temp files) may be: the current
    root, and this machine's folder for remote storage."""
    return list(dict.fromkeys([scratch_root(), Path(settings.VAR_DIR) / REMOTE_SCRATCH_FOLDER]))


def _scratch_entries_of(run):
    entries = []
    for root in _scratch_roots():
        entries += root.glob(f"run{run.pk}-*")
        entries += root.glob(f".partial-run{run.pk}-*")
    if not on_object_storage():  # earlier versions' temp files, next to the destination
        with contextlib.suppress(NotImplementedError, SuspiciousFileOperation):
            folder = Path(default_storage.path(report_folder(run)))
            entries += folder.glob(f".partial-run{run.pk}-*")
    return entries


def _remove_scratch_entry(path):
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_local_partial_files():
    """At worker start (and with each heartbeat): delete scratch directories on this
    machine whose run is not running any more (its worker died, and recovery ran
    elsewhere or not yet). Returns their paths."""
    from runs.models import Run, RunStatus

    entries = {}
    for root in _scratch_roots():
        for path in root.glob("*"):
            match = _SCRATCH_NAME.match(path.name)
            if match:
                entries[path] = int(match.group(1))
    if not entries:
        return []
    running = set(
        Run.objects.filter(pk__in=set(entries.values()), status=RunStatus.RUNNING).values_list(
            "pk", flat=True
        )
    )
    removed = [path for path, run_id in entries.items() if run_id not in running]
    for path in removed:
        _remove_scratch_entry(path)
    return removed


def _remove_objects_of_unfinished_run(run):
    """The run's unfinished uploads and objects it does not record. Its name's label
    depends on the values the run used, which a lost run never recorded, so the
    report's outputs are listed and matched by their run id (runs.naming)."""
    client, bucket = _client(), _bucket()
    key_prefix = object_key(report_outputs_prefix(run))
    recorded = object_key(run.output.name) if run.output else None

    def of_this_run(key):
        return run_id_of_name(key) == run.pk and key != recorded

    removed = []
    for page in client.get_paginator("list_multipart_uploads").paginate(
        Bucket=bucket, Prefix=key_prefix
    ):
        for upload in page.get("Uploads", []):
            if of_this_run(upload["Key"]):
                client.abort_multipart_upload(
                    Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                )
                removed.append(f"unfinished upload s3://{bucket}/{upload['Key']}")
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key_prefix):
        for item in page.get("Contents", []):
            if of_this_run(item["Key"]):
                client.delete_object(Bucket=bucket, Key=item["Key"])
                removed.append(f"object s3://{bucket}/{item['Key']}")
    return removed


def _failed_runs(keys):
    """Of the runs these keys are named for, the ids of those that failed: a failed run
    never records an output, so its objects and uploads are garbage at any age."""
    from runs.models import Run, RunStatus

    ids = {run_id_of_name(key) for key in keys} - {None}
    if not ids:
        return set()
    ended = (RunStatus.FAILED, RunStatus.CANCELLED)
    return set(Run.objects.filter(pk__in=ids, status__in=ended).values_list("pk", flat=True))


def remove_stray_objects(now=None):
    """On S3, under the prefix: abort unfinished uploads, and delete objects no run
    records, that are older than ``OUTPUTS_S3_CLEANUP_AFTER_SECONDS`` (their process
    died between upload and record, or a deletion failed) or belong to a failed run,
    whatever their age (a request given up on that completed after the failure).
    Returns ``(uploads aborted, objects deleted)``."""
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
        uploads = page.get("Uploads", [])
        failed = _failed_runs(upload["Key"] for upload in uploads if upload["Initiated"] >= cutoff)
        for upload in uploads:
            if upload["Initiated"] < cutoff or run_id_of_name(upload["Key"]) in failed:
                client.abort_multipart_upload(
                    Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                )
                aborted += 1
    for page in client.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": KEYS_PER_BATCH}
    ):
        items = page.get("Contents", [])
        failed = _failed_runs(item["Key"] for item in items if item["LastModified"] >= cutoff)
        candidates = {
            item["Key"][len(prefix) :]: item["Key"]
            for item in items
            if item["LastModified"] < cutoff or run_id_of_name(item["Key"]) in failed
        }
        recorded = set(
            Run.objects.filter(output__in=list(candidates)).values_list("output", flat=True)
        )
        stray = [key for name, key in candidates.items() if name not in recorded]
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
