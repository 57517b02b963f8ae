"""Server-side command errors, shaped like the real server's error replies."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

CODE_NAMES: dict[int, str] = {
    1: "InternalError",
    2: "BadValue",
    6: "HostUnreachable",
    7: "HostNotFound",
    9: "FailedToParse",
    11: "UserNotFound",
    14: "TypeMismatch",
    20: "IllegalOperation",
    26: "NamespaceNotFound",
    27: "IndexNotFound",
    43: "CursorNotFound",
    47: "NoMatchingDocument",
    48: "NamespaceExists",
    50: "MaxTimeMSExpired",
    59: "CommandNotFound",
    63: "StaleShardVersion",
    72: "InvalidOptions",
    73: "InvalidNamespace",
    89: "NetworkTimeout",
    91: "ShutdownInProgress",
    115: "CommandNotSupported",
    133: "FailedToSatisfyReadPreference",
    150: "StaleEpoch",
    189: "PrimarySteppedDown",
    216: "ElectionInProgress",
    234: "RetryChangeStream",
    260: "InvalidResumeToken",
    262: "ExceededTimeLimit",
    280: "ChangeStreamFatalError",
    286: "ChangeStreamHistoryLost",
    9001: "SocketException",
    10107: "NotWritablePrimary",
    11000: "DuplicateKey",
    11600: "InterruptedAtShutdown",
    11602: "InterruptedDueToReplStateChange",
    13388: "StaleConfig",
    13435: "NotPrimaryNoSecondaryOk",
    13436: "NotPrimaryOrSecondary",
    40324: "Location40324",
    40573: "Location40573",
}

# The codes after which the server labels an error as safe to retry: the
# "RetryableWriteError" set for writes, which is also the set the server marks
# "ResumableChangeStreamError" on change-stream cursors.
RETRYABLE_CODES = frozenset(
    {6, 7, 89, 91, 133, 150, 189, 234, 262, 9001, 10107, 11600, 11602, 13388, 13435, 13436, 63}
)


class CommandError(Exception):
    """A command failed; the client receives ``ok: 0`` with this code and message."""

    def __init__(
        self,
        code: int,
        message: str,
        *,
        labels: Iterable[str] = (),
        labels_fixed: bool = False,
        extra: dict[str, Any] | None = None,
    ) -> None:
        """*labels_fixed* means the labels were dictated (by a fail point) and the
        server must not add its own."""
        super().__init__(message)
        self.code = code
        self.message = message
        self.labels = list(labels)
        self.labels_fixed = labels_fixed
        self.extra = extra or {}

    def reply(self) -> dict[str, Any]:
        """The error reply document, without operationTime/$clusterTime."""
        doc: dict[str, Any] = {
            "ok": 0.0,
            "errmsg": self.message,
            "code": self.code,
            "codeName": CODE_NAMES.get(self.code, f"Location{self.code}"),
        }
        doc.update(self.extra)
        if self.labels:
            doc["errorLabels"] = list(dict.fromkeys(self.labels))
        return doc


def type_mismatch(field: str, expected: str) -> CommandError:
    """A field of the wrong BSON type (code 14 TypeMismatch)."""
    return CommandError(14, f"BSON field '{field}' is the wrong type, expected {expected}")


class CloseConnection(Exception):
    """Raised by a command to make the server drop the client's connection unanswered."""
