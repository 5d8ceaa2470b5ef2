from core.exceptions import ApplicationError, Conflict, NotFound, PermissionDenied


class LabelingError(ApplicationError):
    pass


class CampaignNotAvailable(PermissionDenied):
    pass


class LeaseNotFound(NotFound):
    pass


class ComparisonFull(Conflict):
    """The pair got its k labels while this annotator's lease had expired."""


class NothingToLabel(NotFound):
    pass


class LabelNotFound(NotFound):
    """No such label of this annotator."""


class LabelEditRefused(Conflict):
    """The label may no longer be changed (window over, in a snapshot)."""


class ImportFailed(LabelingError):
    """An import line was invalid; nothing was written."""

    def __init__(self, *, line: int, field: str, message: str) -> None:
        super().__init__(
            f"line {line}: {field}: {message}",
            extra={"line": line, "field": field, "reason": message},
        )
        self.line = line
        self.field = field
        self.reason = message
