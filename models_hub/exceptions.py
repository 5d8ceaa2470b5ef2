from core.exceptions import ApplicationError, Conflict


class ModelsHubError(ApplicationError):
    pass


class PromotionBlocked(Conflict):
    """The promotion gate refused: not enough evidence that the candidate wins."""


class DeploymentRefused(ModelsHubError):
    """A deployment change, a serving switch or a feedback was refused; the
    message says why (400)."""
