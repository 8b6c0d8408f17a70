"""A simulated crash for training tests: fit's on_step hook that raises after a given optimizer step."""


class Killed(Exception):
    """The process 'died' right after an optimizer step (checkpoints written so far stay)."""


def kill_at(step: int):
    def on_step(s: int) -> None:
        if s == step:
            raise Killed

    return on_step
