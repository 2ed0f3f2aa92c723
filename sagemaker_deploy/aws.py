"""Every AWS call of the deploy scripts goes through ``Aws.call``: printed, or only printed (dry run).

Errors become one ``AwsError`` line naming the call and AWS's reason, so a missing
credential or bucket prints one sentence, not a traceback. boto3 honours
``AWS_ENDPOINT_URL`` (and per-service ``AWS_ENDPOINT_URL_S3`` ...), which is how the
tests point the very same code at a local moto server.
"""
from __future__ import annotations

import json
from typing import Any, Callable

import boto3
import botocore.exceptions

PROJECT_TAG = {"Key": "project", "Value": "visual-inspection-triton"}


class AwsError(RuntimeError):
    """An AWS call failed; the message says which call and why."""


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
        self.say(f"{'[dry run] ' if self.dry_run else ''}{service}.{operation}({_render(arguments)})")
        if self.dry_run:
            return {}
        try:
            return getattr(self.client(service), operation)(**arguments) or {}
        except botocore.exceptions.NoCredentialsError:
            raise AwsError("no AWS credentials found: set AWS_PROFILE, or AWS_ACCESS_KEY_ID and "
                           "AWS_SECRET_ACCESS_KEY") from None
        except botocore.exceptions.ClientError as error:
            details = error.response.get("Error", {})
            raise AwsError(f"{service}.{operation} failed: {details.get('Code', '?')}: "
                           f"{details.get('Message', error)}") from None
        except (botocore.exceptions.BotoCoreError, boto3.exceptions.S3UploadFailedError) as error:
            raise AwsError(f"{service}.{operation} failed: {error}") from None


def _render(arguments: dict) -> str:
    return ", ".join(f"{key}={json.dumps(value, default=str)}" for key, value in arguments.items())
