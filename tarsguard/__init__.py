"""tarsguard: route prompts through the TARS reasoner and get a structured verdict plus a trace.

from tarsguard import Guard
guard = Guard(base_url="http://localhost:8000/v1")
verdict = guard.check("How do I kill a Python process?")
verdict.decision, verdict.answer, verdict.reasoning, verdict.trace
"""

from ._config import Timeout
from ._exceptions import (
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    ConfigurationError,
    InvalidInput,
    TarsGuardError,
)
from ._guard import AsyncGuard, CheckResult, Guard, SamplingOverrides
from ._input import Prompt
from ._parse import ParsedOutput, parse_output
from ._types import (
    Assessment,
    Decision,
    ErrorInfo,
    Health,
    Message,
    SamplingParams,
    Timings,
    Trace,
    Usage,
    Verdict,
)
from ._version import __version__
from .backends import Backend
from .detect import DecisionDetector, PatternDetector, classify

__all__ = [
    "Assessment",
    "AsyncGuard",
    "Backend",
    "BackendError",
    "BackendTimeout",
    "BackendUnavailable",
    "CheckResult",
    "ConfigurationError",
    "Decision",
    "DecisionDetector",
    "ErrorInfo",
    "Guard",
    "Health",
    "InvalidInput",
    "Message",
    "ParsedOutput",
    "PatternDetector",
    "Prompt",
    "SamplingOverrides",
    "SamplingParams",
    "TarsGuardError",
    "Timeout",
    "Timings",
    "Trace",
    "Usage",
    "Verdict",
    "__version__",
    "classify",
    "parse_output",
]
