"""The one error type a construction or task raises for bad parameters: its message names the requirement."""


class RequirementError(ValueError):
    """A parameter violates a stated requirement, e.g. "MQAR Mamba construction needs N >= kappa, got N=3"."""


def require(condition: bool, message: str) -> None:
    if not condition:
        raise RequirementError(message)
