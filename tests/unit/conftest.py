"""Put tests/ (fabric_emulator) and src/ (azure_firstboot) on sys.path, and
load the project's Hypothesis profile.

Profile "ci" (the default): derandomized (the same examples on every run),
no example database, no per-example deadline (a loaded 2-core machine must
not make a property flaky), 150 examples per property unless a test asks for
fewer.  HYPOTHESIS_PROFILE=thorough runs 2,000 random examples per property
for a manual fuzzing session.  Property tests import hypothesis themselves,
so a missing test dependency (.ci/requirements.txt) fails loudly there.
"""
import os
import sys

_TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
for _p in (os.path.join(_TOP, "src"), os.path.join(_TOP, "tests")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

try:
    from hypothesis import HealthCheck, settings
except ImportError:  # pragma: no cover - the property suites fail on import instead
    pass
else:
    settings.register_profile(
        "ci", max_examples=150, deadline=None, derandomize=True, database=None,
        print_blob=True, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    settings.register_profile(
        "thorough", max_examples=2000, deadline=None, derandomize=False, database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
