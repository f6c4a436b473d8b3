"""Run outputs in an S3-compatible bucket: django-storages' S3Storage, whose boto3
sessions share botocore's parsed service descriptions and whose requests have bounded
waits (connect and read timeouts, a number of attempts).

django-storages makes a boto3 session for each storage object and thread, and a new
session parses botocore's S3 service description and endpoint rules again: about 150 ms
of CPU for every web or worker thread that first touches the storage, and for the
presigning client. botocore's loader caches what it has parsed and nothing changes it
afterwards, so one loader serves every session of the process (about 12 ms each).
"""

import functools
import os

import boto3
import botocore.loaders
import botocore.session
from botocore.config import Config
from storages.backends.s3 import S3Storage

from reportsvc.object_storage import CONNECT_TIMEOUT_SECONDS, MAX_ATTEMPTS, READ_TIMEOUT_SECONDS


class _SharedLoader(botocore.loaders.Loader):
    """A loader whose search paths stay as built: every boto3 session appends boto3's own
    data folder to its loader's paths, which would grow a shared list without end."""

    @property
    def search_paths(self):
        return list(self._search_paths)


@functools.cache
def _data_loader():
    configured = botocore.session.get_session().get_config_variable("data_path")  # AWS_DATA_PATH
    paths = configured.split(os.pathsep) if configured else []
    paths.append(os.path.join(os.path.dirname(boto3.__file__), "data"))
    return _SharedLoader(extra_search_paths=paths)


def new_session(**credentials):
    """A boto3 session of its own (credentials, clients) on the process's shared loader."""
    core = botocore.session.get_session()
    core.register_component("data_loader", _data_loader())
    return boto3.Session(botocore_session=core, **credentials)


def bounded_waits(connect_timeout, read_timeout, max_attempts, **more):
    """botocore's configuration for requests that wait at most ``connect_timeout``
    seconds to connect and ``read_timeout`` for each read, made ``max_attempts`` times at
    most (botocore's standard mode: retries after a timeout, a lost connection, a 5xx or
    throttling, with a random backoff)."""
    return Config(
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        retries={"mode": "standard", "total_max_attempts": max_attempts},
        **more,
    )


class OutputS3Storage(S3Storage):
    def __init__(self, **settings):
        super().__init__(**settings)
        self.client_config = self.client_config.merge(
            bounded_waits(self.connect_timeout, self.read_timeout, self.max_attempts)
        )

    def get_default_settings(self):
        return {
            **super().get_default_settings(),
            "connect_timeout": CONNECT_TIMEOUT_SECONDS,
            "read_timeout": READ_TIMEOUT_SECONDS,
            "max_attempts": MAX_ATTEMPTS,
        }

    def _create_session(self):
        if self.session_profile:
            return super()._create_session()
        return new_session(
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            aws_session_token=self.security_token,
        )
