"""Every AWS call of the deploy scripts goes through ``Aws.call`` (or ``Aws.pages`` for listings):
printed, or only printed (dry run).

Errors become one ``AwsError`` line naming the call and AWS's reason, so a missing
credential or bucket prints one sentence, not a traceback. boto3 honours
``AWS_ENDPOINT_URL`` (and per-service ``AWS_ENDPOINT_URL_S3`` ...), which is how the
tests point the very same code at a local moto server.
"""
from __future__ import annotations

import json
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import boto3
import botocore.exceptions

PROJECT_TAG = {"Key": "project", "Value": "visual-inspection-triton"}
ENDPOINT_TAG_KEY = "visual-inspection-triton:endpoint"  # its value: the endpoint a resource belongs to
# On an endpoint: the scaling policies (comma-separated names) a command put on its variant's scalable target.
# Application Auto Scaling's targets and policies are found by name, so the endpoint records which are ours.
SCALING_TAG_KEY = "visual-inspection-triton:scaling-policies"


def ownership_tags(endpoint: str) -> list[dict[str, str]]:
    """The tags every resource made for ``endpoint`` carries: ``teardown`` deletes by these, never by name."""
    return [PROJECT_TAG, {"Key": ENDPOINT_TAG_KEY, "Value": endpoint}]


def s3_tagging(endpoint: str) -> str:
    """The same tags as S3's ``Tagging`` argument (URL-encoded key=value pairs)."""
    return urllib.parse.urlencode({tag["Key"]: tag["Value"] for tag in ownership_tags(endpoint)})


class AwsError(RuntimeError):
    """An AWS call failed; the message says which call and why; ``code`` is AWS's error code, if any."""

    def __init__(self, message: str, code: str = ""):
        super().__init__(message)
        self.code = code


class Aws:
    def __init__(self, region: str | None, dry_run: bool = False, say: Callable[[str], None] = print):
        self.region = region
        self.dry_run = dry_run
        self.say = say
        self._session = boto3.session.Session(region_name=region)
        self._clients: dict[str, Any] = {}

    def client(self, service: str):
        if service not in self._clients:
            try:
                self._clients[service] = self._session.client(service)
            except botocore.exceptions.NoRegionError:
                raise AwsError("no AWS region: pass --region or set AWS_DEFAULT_REGION") from None
        return self._clients[service]

    def call(self, service: str, operation: str, **arguments) -> dict:
        """Run (or, in a dry run, only print) one API call."""
        self._announce(service, operation, arguments)
        if self.dry_run:
            return {}
        with self.one_line_errors(service, operation):
            return getattr(self.client(service), operation)(**arguments) or {}

    def pages(self, service: str, operation: str, result_key: str, **arguments) -> list[dict]:
        """Every item of a listing, all its pages (boto3's paginator), read in full before the caller
        deletes any of them (a deletion between pages can invalidate the next token); printed like ``call``."""
        self._announce(service, operation, arguments, note=" [all pages]")
        if self.dry_run:
            return []
        with self.one_line_errors(service, operation):
            paginator = self.client(service).get_paginator(operation)
            return [item for page in paginator.paginate(**arguments) for item in page.get(result_key, [])]

    def each(self, service: str, work: Callable[[Any], Any], items: list, workers: int = 8) -> list:
        """``work`` (calls to ``service``) for every item, several at a time: one tag read per resource
        adds up to minutes for thousands of them. The answers in the order of ``items``."""
        if items and not self.dry_run:
            self.client(service)  # created here, once: creating boto3 clients is not thread-safe
        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(work, items))

    @contextmanager
    def one_line_errors(self, service: str, operation: str) -> Iterator[None]:
        """AWS's failures inside the block (also while reading a response body) as one ``AwsError`` line."""
        try:
            yield
        except botocore.exceptions.NoCredentialsError:
            raise AwsError("no AWS credentials found: set AWS_PROFILE, or AWS_ACCESS_KEY_ID and "
                           "AWS_SECRET_ACCESS_KEY") from None
        except botocore.exceptions.ClientError as error:
            details = error.response.get("Error", {})
            raise AwsError(f"{service}.{operation} failed: {details.get('Code', '?')}: "
                           f"{details.get('Message', error)}", details.get("Code", "")) from None
        except (botocore.exceptions.BotoCoreError, boto3.exceptions.S3UploadFailedError) as error:
            raise AwsError(f"{service}.{operation} failed: {' '.join(str(error).split())}") from None

    def _announce(self, service: str, operation: str, arguments: dict, note: str = "") -> None:
        self.say(f"{'[dry run] ' if self.dry_run else ''}{service}.{operation}({_render(arguments)}){note}")


def split_s3(url: str) -> tuple[str, str]:
    """(bucket, key or prefix) of an s3:// URL."""
    bucket, _, key = url.removeprefix("s3://").partition("/")
    return bucket, key


def _render(arguments: dict) -> str:
    """The call's arguments as a line; a body is named by its size (it may be a whole report or image)."""
    return ", ".join(f"{key}=<{len(value)} bytes>" if isinstance(value, bytes) else
                     f"{key}={json.dumps(value, default=str)}" for key, value in arguments.items())
