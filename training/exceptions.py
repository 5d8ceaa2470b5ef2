from core.exceptions import ApplicationError, Conflict


class TrainingError(ApplicationError):
    pass


class InvalidTrainingConfig(TrainingError):
    pass


class JobNotCancellable(Conflict):
    pass


class PipelineAlreadyRunning(Conflict):
    pass


class NoTrainingData(TrainingError):
    pass
