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

The runner, recovery, housekeeping, downloads, previews and mails all go through here.
"""

import functools
import io
import logging
import os
import posixpath
import sys
import tempfile
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
    """boto3's S3 client of the storage (one per thread, as django-storages keeps them)."""
    return default_storage.connection.meta.client


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


def output_exists(name):
    return default_storage.exists(name)


def open_output(name, *, head_bytes=None):
    """The stored output, open for reading as a stream; with ``head_bytes`` only that
    many bytes from its start are fetched (a range request on S3), so a preview of a
    huge object transfers only its head. FileNotFoundError when it is missing."""
    if not on_object_storage():
        return default_storage.open(name, "rb")
    from botocore.exceptions import ClientError

    request = {"Bucket": _bucket(), "Key": object_key(name)}
    if head_bytes is not None:
        request["Range"] = f"bytes=0-{max(head_bytes, 1) - 1}"
    try:
        return _client().get_object(**request)["Body"]
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
