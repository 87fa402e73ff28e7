"""The one error type a construction, task or tool raises for bad input: its message names the requirement (and the
flag as the user typed it, where there is one); the command lines answer it with exit 2 and that one line."""


class RequirementError(ValueError):
    """A parameter violates a stated requirement, e.g. "MQAR Mamba construction needs N >= kappa, got N=3"."""


def require(condition: bool, message: str) -> None:
    if not condition:
        raise RequirementError(message)
