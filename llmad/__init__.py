"""llmad: anomaly detection for workflow jobs and service metrics with language models."""
import os

# torch and scikit-learn each bring an OpenMP runtime whose idle threads spin; on a machine whose cores are busy
# (other jobs, two runtimes in one process) a tiny sklearn fit then took minutes instead of a second, and an SFT
# step called from the Python API (no CLI) ran 10x slower (bench/adapt.py, measured). Sleeping idle threads cost
# nothing measurable on the big matrix products. Set on import of llmad, before either library loads when llmad is
# imported first; a user's own value wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
