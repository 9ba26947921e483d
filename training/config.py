"""Training settings and their bounds, defined once for the CLI, the HTTP API and its schema."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MAX_JOB_SECONDS = 600.0  # the longest a retrain job requested over HTTP may be estimated to take
GATE_BITS = 4096  # the width a job's gate checks up to unless it is told otherwise
# Seconds per update and trained bit: a fixed cost, plus a cost per pair x hidden unit x (hidden
# units + 2); about 1.5-2x what `python -m benchmarks.training --work` fits, so an upper estimate.
SECONDS_PER_STEP_BIT = 2.0e-5
SECONDS_PER_UNIT = 1.2e-9
# Seconds per pair and step of inference (the checks and the gate): fixed, plus per hidden unit
# x (hidden units + 2); the same margin over what `--work` fits.
SECONDS_PER_PAIR_BIT = 1.5e-7
SECONDS_PER_PAIR_UNIT = 6.0e-10
VERIFY_SECONDS = 2.0  # re-checking a certificate (the store does at activation), upper estimate
FINISH_SECONDS = 5.0  # kept back from the deadline for evaluating and saving the result
CHECK_PAIR_BITS = 16_384 * 8  # one exhaustive 8-bit check
QUICK_PAIR_BITS = 150_000  # one quick check (gate.quick_check) at 4096 bits, rounded up


class ConfigError(ValueError):
    """A setting is missing, of the wrong type or out of bounds; .field names it."""

    def __init__(self, field: str | None, message: str) -> None:
        self.field = field
        super().__init__(message)


@dataclass(frozen=True)
class Field:
    """One setting: its type, bounds, default and the help the CLI and the schema show."""

    kind: type
    default: Any
    help: str
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    exclusive_maximum: bool = False
    choices: tuple[str, ...] = ()


PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    # The original program: per-sample SGD at 0.1 for 10,000 updates, 16 units, no biases, and
    # its random draws (numpy's legacy RandomState), checked every 100 updates like it does.
    "original": {
        "hidden_size": 16,
        "optimizer": "sgd",
        "learning_rate": 0.1,
        "batch_size": 1,
        "max_steps": 10_000,
        "bits": 8,
        "long_bits": 0,
        "biases": False,
        "check_every": 100,
        "certify": False,
        "finetune_rounds": 0,
    },
}

FIELDS: dict[str, Field] = {
    "preset": Field(str, "default", "named starting point; explicit settings override it",
                    choices=tuple(PRESETS)),
    "seed": Field(int, 0, "random seed of the initial weights and the training pairs",
                  0, 2**32 - 1),
    "hidden_size": Field(int, 16, "number of hidden units", 1, 256),
    "optimizer": Field(str, "adam", "update rule", choices=("adam", "sgd")),
    "learning_rate": Field(float, 0.15, "step size", 0.0, 10.0, exclusive_minimum=True),
    # 0.5 reached 100% at 8 bits in fewer updates than Adam's usual 0.9
    "beta1": Field(float, 0.5, "Adam's first-moment decay", 0.0, 1.0, exclusive_maximum=True),
    "batch_size": Field(int, 32, "pairs per update", 1, 4096),
    "max_steps": Field(int, 5_000, "most updates before training stops", 1, 100_000),
    "bits": Field(int, 8, "width of the first phase, until every 8-bit sum is exact", 2, 64),
    "long_bits": Field(int, 32, "width of the second phase, until the promotion gate passes "
                       "(0: stop once every 8-bit sum is exact)", 0, 64),
    "biases": Field(bool, False, "train bias vectors too"),
    "check_every": Field(int, 10, "updates between accuracy checks", 1, 10_000),
    "early_stop": Field(bool, True, "stop as soon as the goal is reached, not at max_steps"),
    "certify": Field(bool, True, "after the gate passes, fine-tune and prove the model exact at "
                     "every width; only a certified model may go live"),
    "finetune_rounds": Field(int, 6, "most fine-tune rounds, each followed by the gate and the "
                             "certifier, until one certifies (0: certify the model as trained)",
                             0, 10),
    "finetune_steps": Field(int, 1_000, "updates per fine-tune round, on long_bits pairs", 1,
                            5_000),
    "finetune_learning_rate": Field(float, 0.01, "Adam's step size in the fine-tune", 0.0, 10.0,
                                    exclusive_minimum=True),
    "saturation": Field(float, 0.05, "weight of mean h (1 - h) in the fine-tune's loss: units "
                        "near 0 or 1 make a model provable", 0.0, 10.0),
    "certify_seconds": Field(float, 10.0, "most seconds one certification may search, after "
                             "each fine-tune round but the first of several", 0.0, 60.0,
                             exclusive_minimum=True),
    "deadline_seconds": Field(float, MAX_JOB_SECONDS, "wall-clock limit of the whole run: "
                              "training stops there, saved but not certified", 0.0,
                              MAX_JOB_SECONDS, exclusive_minimum=True),
}


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run, checked against FIELDS when made."""

    preset: str = FIELDS["preset"].default
    seed: int = FIELDS["seed"].default
    hidden_size: int = FIELDS["hidden_size"].default
    optimizer: str = FIELDS["optimizer"].default
    learning_rate: float = FIELDS["learning_rate"].default
    beta1: float = FIELDS["beta1"].default
    batch_size: int = FIELDS["batch_size"].default
    max_steps: int = FIELDS["max_steps"].default
    bits: int = FIELDS["bits"].default
    long_bits: int = FIELDS["long_bits"].default
    biases: bool = FIELDS["biases"].default
    check_every: int = FIELDS["check_every"].default
    early_stop: bool = FIELDS["early_stop"].default
    certify: bool = FIELDS["certify"].default
    finetune_rounds: int = FIELDS["finetune_rounds"].default
    finetune_steps: int = FIELDS["finetune_steps"].default
    finetune_learning_rate: float = FIELDS["finetune_learning_rate"].default
    saturation: float = FIELDS["saturation"].default
    certify_seconds: float = FIELDS["certify_seconds"].default
    deadline_seconds: float = FIELDS["deadline_seconds"].default

    def __post_init__(self) -> None:
        for name in FIELDS:
            object.__setattr__(self, name, check_value(name, getattr(self, name)))
        if self.long_bits and self.long_bits < self.bits:
            raise ConfigError("long_bits", f"long_bits must be 0 or at least bits ({self.bits})")


def _range_text(spec: Field) -> str:
    """Human form of a field's bounds, for messages and help."""
    low = "(" if spec.exclusive_minimum else "["
    high = ")" if spec.exclusive_maximum else "]"
    return f"{low}{spec.minimum:g}, {spec.maximum:g}{high}"


def check_value(name: str, value: object) -> Any:
    """Return value as the field's type if it is one and within bounds; else ConfigError."""
    spec = FIELDS[name]
    if spec.kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(name, f"{name} must be true or false")
        return value
    if spec.kind is str:
        if not isinstance(value, str) or value not in spec.choices:
            raise ConfigError(name, f"{name} must be one of {', '.join(spec.choices)}")
        return value
    # numbers: bool is not a number here; ints may come as integral floats (JSON has one type)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(name, f"{name} must be a number in {_range_text(spec)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(name, f"{name} must be finite")
    if spec.kind is int and isinstance(value, float) and not value.is_integer():
        raise ConfigError(name, f"{name} must be a whole number")
    # compare before converting: a 400-digit int must fail here, not overflow in float()
    assert spec.minimum is not None and spec.maximum is not None
    below = value <= spec.minimum if spec.exclusive_minimum else value < spec.minimum
    above = value >= spec.maximum if spec.exclusive_maximum else value > spec.maximum
    if below or above:
        shown = value if abs(value) < 1e15 else f"{'-' if value < 0 else ''}a very large number"
        raise ConfigError(name, f"{name} must be in {_range_text(spec)}, got {shown}")
    return spec.kind(value)


def max_gate_runs(checks: int) -> int:
    """Most full gates in `checks` checks: after the k-th, the next waits 2^(k-1) checks."""
    return (checks + 1).bit_length()


def restart_round(config: TrainConfig) -> int | None:
    """The fine-tune round that starts again from the trained weights on fresh pairs, if any.

    With 4 rounds or more, the second half restarts: a fine-tune that saturates a model past
    what the certifier can prove (seed 12 of 0-19) seldom recovers, a fresh one often does.
    """
    return config.finetune_rounds // 2 + 1 if config.finetune_rounds >= 4 else None


def certify_budgets(config: TrainConfig) -> list[float]:
    """The certifier's time limit after each fine-tune round; 0 means that round is only gated.

    The first round of a fine-tune (from the trained weights) is only gated: on seeds 0-19 one
    round never sufficed, so certifying after it was time lost. Every other round gets
    certify_seconds. One attempt when finetune_rounds is 0 or 1; none without certify.
    """
    if not config.certify:
        return []
    if config.finetune_rounds <= 1:
        return [config.certify_seconds]
    fresh = {1, restart_round(config)}
    return [0.0 if k in fresh else config.certify_seconds
            for k in range(1, config.finetune_rounds + 1)]


def work_parts(config: TrainConfig, max_bits: int = GATE_BITS) -> dict[str, float]:
    """Upper estimates, in seconds on one core, of each kind of work a run may do."""
    from training.gate import work_pair_bits  # the gate's size; config itself stays light

    width = max(config.bits, config.long_bits)
    units = config.hidden_size * (config.hidden_size + 2)
    per_bit = SECONDS_PER_STEP_BIT + SECONDS_PER_UNIT * config.batch_size * units
    per_pair_bit = SECONDS_PER_PAIR_BIT + SECONDS_PER_PAIR_UNIT * units
    gate = work_pair_bits(max_bits) * per_pair_bit
    check = CHECK_PAIR_BITS * per_pair_bit
    quick = QUICK_PAIR_BITS * max(1.0, max_bits / GATE_BITS) * per_pair_bit
    checks = config.max_steps // config.check_every + 1
    rounds = config.finetune_rounds if config.certify else 0
    attempts = max(rounds, 1) if config.certify else 0
    return {
        "updates": config.max_steps * width * per_bit,
        # every check may run the exhaustive 8-bit check and the quick one; full gates back off
        "checks": checks * (check + quick) + max_gate_runs(checks) * gate,
        "finetune": rounds * config.finetune_steps * (config.long_bits or config.bits) * per_bit,
        "certify": attempts * (gate + check) + sum(b + VERIFY_SECONDS
                                                   for b in certify_budgets(config) if b),
        "finish": gate + 2 * check + FINISH_SECONDS,  # the record's gate and metrics, the save
    }


# The settings behind each part of the estimate, the most telling first.
PART_FIELDS = {
    "updates": ("max_steps", "batch_size", "hidden_size", "long_bits", "bits"),
    "checks": ("check_every", "max_steps", "hidden_size"),
    "finetune": ("finetune_steps", "finetune_rounds", "batch_size", "hidden_size"),
    "certify": ("certify_seconds", "finetune_rounds", "certify"),
    "finish": ("hidden_size",),
}


def work_seconds_estimate(config: TrainConfig, max_bits: int = GATE_BITS) -> float:
    """Upper estimate of one run's time on one core: updates, checks, gates, certification."""
    return sum(work_parts(config, max_bits).values())


def make_config(values: Mapping[str, object], *, bound_work: bool = True) -> TrainConfig:
    """A config from a preset plus explicit values, every one checked; optionally work-bounded."""
    unknown = sorted(str(k) for k in values if k not in FIELDS)
    if unknown:
        raise ConfigError(unknown[0], f"unknown field {unknown[0]!r}; allowed: {', '.join(FIELDS)}")
    preset = check_value("preset", values.get("preset", "default"))
    config = TrainConfig(**{**PRESETS[preset], **values, "preset": preset})  # type: ignore[arg-type]
    if bound_work:
        bound_config_work(config, values)
    return config


def bound_work_field(config: TrainConfig, values: Mapping[str, object]) -> str:
    """The field a refusal names: behind the largest part of the estimate, one given if any."""
    parts = work_parts(config)
    fields = PART_FIELDS[max(parts, key=parts.__getitem__)]
    return next((f for f in fields if f in values), fields[0])


def bound_config_work(config: TrainConfig, values: Mapping[str, object]) -> None:
    """Refuse a job estimated to take longer than MAX_JOB_SECONDS, or allowed to run longer."""
    seconds = work_seconds_estimate(config)
    if seconds > MAX_JOB_SECONDS:
        field = bound_work_field(config, values)
        raise ConfigError(
            field,
            f"this job could take about {seconds:,.1f} s (its updates, and every check, gate, "
            f"fine-tune and certification it may run), over the limit of "
            f"{MAX_JOB_SECONDS:,.0f} s; change {field}",
        )


def config_from_request(body: Mapping[str, object]) -> TrainConfig:
    """The config an HTTP retrain request asks for; ConfigError names what is wrong."""
    if not isinstance(body, Mapping):
        raise ConfigError(None, "the body must be a JSON object of training settings")
    return make_config(body, bound_work=True)


def request_schema() -> dict:
    """JSON Schema of a retrain request's settings, for the OpenAPI document."""
    properties: dict[str, dict] = {}
    for name, spec in FIELDS.items():
        prop: dict[str, Any] = {"description": spec.help, "default": spec.default}
        if spec.kind is bool:
            prop["type"] = "boolean"
        elif spec.kind is str:
            prop.update(type="string", enum=list(spec.choices))
        else:
            prop["type"] = "integer" if spec.kind is int else "number"
            prop["exclusiveMinimum" if spec.exclusive_minimum else "minimum"] = spec.kind(
                spec.minimum
            )
            prop["exclusiveMaximum" if spec.exclusive_maximum else "maximum"] = spec.kind(
                spec.maximum
            )
        properties[name] = prop
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": properties,
        "description": "Training settings; a preset fills in what is not given. A job estimated "
        f"to take over {MAX_JOB_SECONDS:g} s on one core (its updates and every check, gate, "
        "fine-tune and certification it may run) is refused.",
    }


def config_fields(config: TrainConfig) -> dict[str, Any]:
    """The config as a plain dict, as stored in model.json."""
    return dataclasses.asdict(config)
