"""Errors a provider adapter raises; the services translate them at their edges."""


class GatewayError(Exception):
    """The provider did not do what was asked."""


class TransientGatewayError(GatewayError):
    """Worth retrying: timeout, refused connection, 5xx, 429."""


class PermanentGatewayError(GatewayError):
    """Retrying cannot help: the provider refused the request (4xx); `status` is its HTTP status, if it sent one.

    `code`, when the provider named one, says why (its error code), e.g. the failure code of a refused refund.
    """

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class NoSuchIntentError(PermanentGatewayError):
    """The provider has no intent of this id: a final answer (nothing can be paid through it), not a refusal."""


class SignatureError(Exception):
    """A webhook whose signature is missing, malformed, stale or made with no secret we hold."""


class InvalidWebhookError(Exception):
    """A correctly signed webhook whose body is not an event we understand."""
