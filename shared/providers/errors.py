"""Errors a provider adapter raises; the services translate them at their edges."""


class GatewayError(Exception):
    """The provider did not do what was asked."""


class TransientGatewayError(GatewayError):
    """Worth retrying: timeout, refused connection, 5xx, 429."""


class PermanentGatewayError(GatewayError):
    """Retrying cannot help: the provider refused the request (4xx); `status` is its HTTP status, if it sent one."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class NoSuchIntentError(PermanentGatewayError):
    """The provider has no intent of this id: a final answer (nothing can be paid through it), not a refusal."""


class SignatureError(Exception):
    """A webhook whose signature is missing, malformed, stale or made with no secret we hold."""


class InvalidWebhookError(Exception):
    """A correctly signed webhook whose body is not an event we understand."""
