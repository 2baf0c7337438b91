"""One exception tree. Each class carries the data its HTTP error body needs."""

from __future__ import annotations


class PredqError(Exception):
    """Root of every error predq raises on purpose."""

    status = 500
    code = "internal_error"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def to_dict(self) -> dict[str, object]:
        body: dict[str, object] = {"code": self.code, "message": self.message}
        if self.field is not None:
            body["field"] = self.field
        return body


class InvalidInput(PredqError):
    status = 400
    code = "invalid_input"

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}", field=field)
        self.reason = reason


class MalformedJSON(PredqError):
    status = 400
    code = "malformed_json"


class Unauthorized(PredqError):
    status = 401
    code = "unauthorized"


class NotFound(PredqError):
    status = 404
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"

    def __init__(self, name: str, version: str | None = None) -> None:
        what = f"model {name!r}" + (f" version {version!r}" if version else "")
        super().__init__(f"{what} is not registered", field="version" if version else "model")
        self.name = name
        self.version = version


class JobNotFound(NotFound):
    code = "job_not_found"

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id!r} not found")
        self.job_id = job_id


class JobNotFinished(PredqError):
    status = 409
    code = "job_not_finished"

    def __init__(self, job_id: str, status: str, error: str | None = None) -> None:
        reason = f"job {job_id} has no result: it is {status}"
        super().__init__(f"{reason}: {error}" if error else reason)
        self.job_id = job_id
        self.job_status = status
        self.error = error

    def to_dict(self) -> dict[str, object]:
        return {**super().to_dict(), "status": self.job_status}


class PayloadTooLarge(PredqError):
    status = 413
    code = "payload_too_large"


class TooManyRequests(PredqError):
    """Refused for now (a full queue, a tenant's limit): answered 429 with Retry-After."""

    status = 429

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def to_dict(self) -> dict[str, object]:
        return {**super().to_dict(), "retry_after": self.retry_after}


class Conflict(PredqError):
    status = 409
    code = "conflict"


class NotAcceptable(PredqError):
    """None of the formats the Accept header names can hold the result."""

    status = 406
    code = "not_acceptable"


class TransientError(PredqError):
    """A broker or database hiccup: worth retrying with back-off."""

    status = 503
    code = "unavailable"


class ModelLoadError(PredqError):
    """The artifact cannot be used (missing, sha256 mismatch, not a model). Not retried."""

    code = "model_load_error"


class ArtifactMismatch(ModelLoadError):
    code = "artifact_sha256_mismatch"

    def __init__(self, path: str, expected: str, actual: str) -> None:
        super().__init__(
            f"artifact {path} has sha256 {actual}, registered as {expected}; refusing to load it"
        )
        self.expected = expected
        self.actual = actual


class ArtifactVersionMismatch(ModelLoadError):
    """Made with another scikit-learn or numpy than the one running: predictions could differ."""

    code = "artifact_version_mismatch"

    def __init__(self, subject: str, library: str, recorded: str, running: str) -> None:
        super().__init__(
            f"{subject} was made with {library} {recorded}, this process runs {library} "
            f"{running}; refusing to load it"
        )
        self.library = library
        self.recorded = recorded
        self.running = running


class UntrustedTypes(ModelLoadError):
    """A .skops artifact holds types that neither skops nor the operator trusts."""

    code = "untrusted_types"

    def __init__(self, subject: str, types: list[str]) -> None:
        super().__init__(
            f"{subject} contains types that are not trusted: {', '.join(types)}; refusing to "
            "load it (inspect them, then trust each one with --trust TYPE)"
        )
        self.types = types
