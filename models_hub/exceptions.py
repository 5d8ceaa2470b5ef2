from core.exceptions import ApplicationError, Conflict


class ModelsHubError(ApplicationError):
    pass


class PromotionBlocked(Conflict):
    """The promotion gate refused: not enough evidence that the candidate wins."""
