"""The STORAGES setting: run outputs on the filesystem, or in an S3-compatible bucket.

Plain data, no Django imports: settings.py builds the setting with it, and the tests
build the same setting to switch a test to object storage.
"""

FILESYSTEM_BACKEND = "django.core.files.storage.FileSystemStorage"
S3_BACKEND = "reportsvc.s3_storage.OutputS3Storage"
STATICFILES = {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}

ADDRESSING_STYLES = ("auto", "path", "virtual")
# The longest a SigV4 presigned URL may be valid.
MAX_URL_EXPIRE_SECONDS = 7 * 24 * 3600

# How long a request may wait on the storage, and how often it is tried (botocore's
# defaults are 60 s to read, with retries: minutes for one call to a stalled storage).
CONNECT_TIMEOUT_SECONDS = 5
READ_TIMEOUT_SECONDS = 30
MAX_ATTEMPTS = 3


def filesystem_storages():
    return {"default": {"BACKEND": FILESYSTEM_BACKEND}, "staticfiles": STATICFILES}


def s3_storages(
    bucket,
    *,
    prefix="",
    endpoint_url=None,
    access_key=None,
    secret_key=None,
    region_name=None,
    addressing_style=None,
    url_expire_seconds=60,
    connect_timeout=CONNECT_TIMEOUT_SECONDS,
    read_timeout=READ_TIMEOUT_SECONDS,
    max_attempts=MAX_ATTEMPTS,
):
    """Outputs in ``bucket`` under ``prefix``, private: no ACL is sent, so objects
    belong to the bucket owner alone, and every URL is presigned for a short while.

    Every request waits at most ``connect_timeout`` seconds to connect and
    ``read_timeout`` for each read, and is made at most ``max_attempts`` times."""
    return {
        "default": {
            "BACKEND": S3_BACKEND,
            "OPTIONS": {
                "bucket_name": bucket,
                "location": prefix.strip("/"),
                "endpoint_url": endpoint_url or None,
                # None: boto3's own chain (environment, instance or task role).
                "access_key": access_key or None,
                "secret_key": secret_key or None,
                "region_name": region_name or None,
                "addressing_style": addressing_style or None,
                "signature_version": "s3v4",
                "default_acl": None,
                "querystring_auth": True,
                "querystring_expire": url_expire_seconds,
                # A run's key is unique (it holds the run id): no existence check.
                "file_overwrite": True,
                "connect_timeout": connect_timeout,
                "read_timeout": read_timeout,
                "max_attempts": max_attempts,
            },
        },
        "staticfiles": STATICFILES,
    }


def check_s3_options(addressing_style, url_expire_seconds, **positive):
    """The problem with these values, in a sentence, or None. ``positive``: settings
    (by name) that must be above zero."""
    if addressing_style and addressing_style not in ADDRESSING_STYLES:
        return (
            f"AWS_S3_ADDRESSING_STYLE must be one of {', '.join(ADDRESSING_STYLES)} "
            f"(path for MinIO), not {addressing_style!r}."
        )
    if not 1 <= url_expire_seconds <= MAX_URL_EXPIRE_SECONDS:
        return (
            f"OUTPUTS_S3_URL_EXPIRE_SECONDS must be between 1 and {MAX_URL_EXPIRE_SECONDS} "
            f"(7 days, the most a presigned URL allows), not {url_expire_seconds}."
        )
    for name, value in positive.items():
        if not value > 0:
            return f"{name} must be above 0, not {value}."
    return None
